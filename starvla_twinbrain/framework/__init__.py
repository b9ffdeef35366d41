"""TwinBrain adapted to starVLA's framework contract, and its registration with the host."""

from .twinbrain import REGISTRY_NAME, TwinBrain, register

__all__ = ["REGISTRY_NAME", "TwinBrain", "register"]
