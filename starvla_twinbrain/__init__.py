"""TwinBrainVLA for starVLA: a frozen Left Brain and a trainable Right Brain joined by AsyMoT attention.

Importing the package registers the ``TwinBrain`` framework with starVLA's ``FRAMEWORK_REGISTRY`` when starVLA is
importable (starVLA has no plugin discovery: the plugin must be imported in every process before
``build_framework`` / ``from_pretrained``)."""

import importlib.util as _importlib_util

from .config import BackboneConfig, PromptConfig
from .model import DualBrainBackbone
from .tiny_vlm import make_tiny_vlm

__version__ = "0.1.0"
__all__ = ["BackboneConfig", "DualBrainBackbone", "PromptConfig", "make_tiny_vlm", "__version__"]

if _importlib_util.find_spec("starVLA") is not None:
    from .framework import register as _register

    _register()
