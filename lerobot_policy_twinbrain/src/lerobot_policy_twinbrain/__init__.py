"""TwinBrain as a LeRobot policy: ``lerobot-train --policy.type=twinbrain ...``.

LeRobot imports this package at start-up (its name starts with ``lerobot_policy_``); importing the config registers
"twinbrain". The policy and processors are imported by LeRobot's factory from the sibling ``modeling_twinbrain`` and
``processor_twinbrain`` modules when needed.
"""

from .configuration_twinbrain import TwinBrainConfig

__all__ = ["TwinBrainConfig", "TwinBrainPolicy", "make_twinbrain_pre_post_processors"]


def __getattr__(name: str):
    if name == "TwinBrainPolicy":
        from .modeling_twinbrain import TwinBrainPolicy

        return TwinBrainPolicy
    if name == "make_twinbrain_pre_post_processors":
        from .processor_twinbrain import make_twinbrain_pre_post_processors

        return make_twinbrain_pre_post_processors
    raise AttributeError(name)
