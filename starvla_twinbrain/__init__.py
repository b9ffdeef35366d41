"""TwinBrainVLA for starVLA: a frozen Left Brain and a trainable Right Brain joined by AsyMoT attention.

Importing the package registers the ``TwinBrain`` framework with starVLA's ``FRAMEWORK_REGISTRY`` when starVLA is
importable (starVLA has no plugin discovery: the plugin must be imported in every process before
``build_framework`` / ``from_pretrained``). Otherwise nothing heavy is imported here, so the policy client
(``starvla_twinbrain.serving.client``) works in a simulator's environment without torch."""

import importlib as _importlib
import importlib.util as _importlib_util

__version__ = "0.1.0"
__all__ = ["BackboneConfig", "DualBrainBackbone", "PromptConfig", "make_tiny_vlm", "__version__"]

_LAZY = {"BackboneConfig": ".model.config", "PromptConfig": ".model.config", "DualBrainBackbone": ".model", "make_tiny_vlm": ".tiny_vlm"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(_importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if _importlib_util.find_spec("starVLA") is not None:
    from .framework import register as _register

    _register()
