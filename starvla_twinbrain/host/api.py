"""The host's pieces: starVLA's base class, registry and GR00T head when starVLA is importable, local
stand-ins with the same contract otherwise (the embedded runtime, tests, CI)."""

from __future__ import annotations

import importlib.util
import logging

from transformers import PretrainedConfig, PreTrainedModel

logger = logging.getLogger(__name__)

STARVLA_AVAILABLE = importlib.util.find_spec("starVLA") is not None


class LocalRegistry:
    """A name → class registry shaped like starVLA's ``FRAMEWORK_REGISTRY`` (``register`` decorator, ``[]``)."""

    def __init__(self):
        self._registry: dict[str, type] = {}

    def register(self, name: str):
        def decorator(cls):
            self._registry[name] = cls
            return cls

        return decorator

    def __getitem__(self, name: str) -> type:
        try:
            return self._registry[name]
        except KeyError:
            raise KeyError(f"framework.name={name!r} is not registered; registered: {', '.join(sorted(self._registry))}") from None

    def __contains__(self, name: str) -> bool:
        try:
            self._registry[name]
        except KeyError:
            return False
        return True


class LocalBaseFramework(PreTrainedModel):
    """Stand-in for ``starVLA.model.framework.base_framework.baseframework``: a ``PreTrainedModel`` whose
    ``__init__`` receives the whole training config. Loading a run's checkpoint is the runtime's job."""

    config_class = PretrainedConfig

    def __init__(self, hf_config: PretrainedConfig | None = None):
        super().__init__(hf_config or PretrainedConfig())


if STARVLA_AVAILABLE:
    from starVLA.model.framework.base_framework import baseframework as BaseFramework
    from starVLA.model.tools import FRAMEWORK_REGISTRY
else:
    BaseFramework = LocalBaseFramework
    FRAMEWORK_REGISTRY = LocalRegistry()


def starvla_action_model(config):
    """starVLA's GR00T head, built from the full config (``framework.action_model``), unchanged."""
    from starVLA.model.modules.action_model.GR00T_ActionHeader import get_action_model

    return get_action_model(config=config)
