"""Datasets this package makes, registered with starVLA's own data loader (its ``gr00t_lerobot`` reader).

starVLA finds datasets through two registries, ``DATASET_NAMED_MIXTURES`` (mixture → [(folder, weight,
robot_type)]) and ``ROBOT_TYPE_CONFIG_MAP`` (robot_type → a DataConfig naming the modality keys, the chunk's
step offsets and the normalisation). A plugin extends them by mutating the dicts. The datasets written by
``starvla make-dataset`` are LeRobot v3.0 with images stored in parquet and a GR00T ``meta/modality.json``, which
starVLA reads with ``datasets.vla_data.lerobot_version: v3.0``.

Only imported where starVLA is (``starvla_host`` does it in every process).
"""

from __future__ import annotations

# modality.json keys of the datasets written by runtime.synthetic (GR00T style: "<modality>.<split name>").
SYNTHETIC_VIDEO_KEYS = ["video.cam"]
SYNTHETIC_STATE_KEYS = ["state.state"]
SYNTHETIC_ACTION_KEYS = ["action.action"]
LANGUAGE_KEYS = ["annotation.human.action.task_description"]


class SimpleDataConfig:
    """A starVLA DataConfig: one observation step, ``action_horizon`` action steps, min/max-normalised actions
    (state is passed raw, as starVLA's own configs do)."""

    def __init__(self, video_keys, state_keys, action_keys, action_horizon: int):
        from starVLA.dataloader.gr00t_lerobot.embodiment_tags import EmbodimentTag

        self.embodiment_tag = EmbodimentTag.NEW_EMBODIMENT
        self.video_keys, self.state_keys, self.action_keys = list(video_keys), list(state_keys), list(action_keys)
        self.language_keys = list(LANGUAGE_KEYS)
        self.action_horizon = int(action_horizon)

    def modality_config(self):
        from starVLA.dataloader.gr00t_lerobot.datasets import ModalityConfig

        now = [0]
        return {
            "video": ModalityConfig(delta_indices=now, modality_keys=self.video_keys),
            "state": ModalityConfig(delta_indices=now, modality_keys=self.state_keys),
            "action": ModalityConfig(delta_indices=list(range(self.action_horizon)), modality_keys=self.action_keys),
            "language": ModalityConfig(delta_indices=now, modality_keys=self.language_keys),
        }

    def transform(self):
        from starVLA.dataloader.gr00t_lerobot.transform.base import ComposedModalityTransform
        from starVLA.dataloader.gr00t_lerobot.transform.state_action import StateActionToTensor, StateActionTransform

        return ComposedModalityTransform(transforms=[
            StateActionToTensor(apply_to=self.action_keys),
            StateActionTransform(apply_to=self.action_keys,
                                 normalization_modes={key: "min_max" for key in self.action_keys}),
        ])


def register_dataset(mixture: str, folder: str, robot_type: str, data_config) -> None:
    """Make ``datasets.vla_data.data_mix: <mixture>`` mean ``data_root_dir/<folder>`` read with ``data_config``."""
    from starVLA.dataloader.gr00t_lerobot import registry

    registry.ROBOT_TYPE_CONFIG_MAP[robot_type] = data_config
    registry.DATASET_NAMED_MIXTURES[mixture] = [(folder, 1.0, robot_type)]
    tags = getattr(registry, "ROBOT_TYPE_TO_EMBODIMENT_TAG", None)
    if isinstance(tags, dict):
        tags[robot_type] = data_config.embodiment_tag


def register_builtin_datasets(action_horizon: int = 4) -> None:
    """``data_mix: synthetic`` → the folder ``synthetic`` written by ``starvla make-dataset``."""
    register_dataset("synthetic", "synthetic", "twinbrain_synthetic",
                     SimpleDataConfig(SYNTHETIC_VIDEO_KEYS, SYNTHETIC_STATE_KEYS, SYNTHETIC_ACTION_KEYS, action_horizon))
