"""The model core: AsyMoT attention, the dual-brain backbone, the state encoder, the action head. No host imports.

Names are loaded on first use, so that ``model.config`` (plain dataclasses) is read without torch."""

import importlib as _importlib

_LAZY = {"AsyMoTContext": ".asymot_attention", "resolve_backend": ".asymot_attention", "BackboneOutput": ".dual_brain",
         "DualBrainBackbone": ".dual_brain", "TwinBrainInputs": ".dual_brain", "StateEncoder": ".state_encoder"}
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(_importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
