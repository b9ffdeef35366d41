"""The model core: AsyMoT attention, the dual-brain backbone, the state encoder. No host imports."""

from .asymot_attention import AsyMoTContext, resolve_backend
from .dual_brain import BackboneOutput, DualBrainBackbone, TwinBrainInputs
from .state_encoder import StateEncoder

__all__ = ["AsyMoTContext", "BackboneOutput", "DualBrainBackbone", "StateEncoder", "TwinBrainInputs", "resolve_backend"]
