"""TwinBrainVLA for starVLA: a frozen Left Brain and a trainable Right Brain joined by AsyMoT attention."""

from .config import BackboneConfig, PromptConfig
from .model import DualBrainBackbone
from .tiny_vlm import make_tiny_vlm

__version__ = "0.1.0"
__all__ = ["BackboneConfig", "DualBrainBackbone", "PromptConfig", "make_tiny_vlm", "__version__"]
