"""Datasets this package makes, registered with starVLA's own data loader (its ``gr00t_lerobot`` reader).

starVLA finds datasets through two registries, ``DATASET_NAMED_MIXTURES`` (mixture → [(folder, weight,
robot_type)]) and ``ROBOT_TYPE_CONFIG_MAP`` (robot_type → a DataConfig naming the modality keys, the chunk's
step offsets and the normalisation). A plugin extends them by mutating the dicts. The datasets written by
``starvla make-dataset`` (and the robosuite demo's ``eval/robosuite/to_lerobot.py``) are LeRobot v3.0 with images
stored in parquet and a GR00T ``meta/modality.json``, which starVLA reads with ``datasets.vla_data.lerobot_version:
v3.0``.

Only imported where starVLA is: the autoload hook registers these datasets when starVLA's data registry loads.
"""

from __future__ import annotations

import sys

# modality.json keys of the datasets written by runtime.synthetic (GR00T style: "<modality>.<split name>").
SYNTHETIC_VIDEO_KEYS = ["video.cam"]
SYNTHETIC_STATE_KEYS = ["state.state"]
SYNTHETIC_ACTION_KEYS = ["action.action"]
LANGUAGE_KEYS = ["annotation.human.action.task_description"]


def _flag_value(argv: list[str], flag: str) -> str | None:
    """The value of ``--flag value`` or ``--flag=value`` (the last one wins, as in starVLA's dotlist merge)."""
    value = None
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(flag + "="):
            value = arg[len(flag) + 1:]
    return value


def action_horizon_from_command(argv: list[str]) -> int:
    """``framework.action_model.action_horizon`` of the run being launched: its ``--framework.action_model.
    action_horizon`` override, else the value in its ``--config_yaml`` (starVLA's training script takes both)."""
    override = _flag_value(argv, "--framework.action_model.action_horizon")
    if override is not None:
        return int(override)
    config_yaml = _flag_value(argv, "--config_yaml")
    if config_yaml is not None:
        from omegaconf import OmegaConf

        horizon = OmegaConf.select(OmegaConf.load(config_yaml), "framework.action_model.action_horizon")
        if horizon is not None:
            return int(horizon)
    raise ValueError(
        "starvla_twinbrain datasets: the action chunk length comes from framework.action_model.action_horizon, read "
        f"from the launch command's --config_yaml, and this command has none ({argv[:1]} ...); pass --config_yaml, "
        "or call starvla_twinbrain.host.data.register_builtin_datasets(action_horizon=N) first"
    )


class SimpleDataConfig:
    """A starVLA DataConfig: one observation step, ``action_horizon`` action steps, min/max-normalised actions
    (state is passed raw, as starVLA's own configs do). ``action_horizon=None``: the run's own, read from the launch
    command when starVLA builds the dataset (the data registry loads before the run's config is known)."""

    def __init__(self, video_keys, state_keys, action_keys, action_horizon: int | None = None):
        from starVLA.dataloader.gr00t_lerobot.embodiment_tags import EmbodimentTag

        self.embodiment_tag = EmbodimentTag.NEW_EMBODIMENT
        self.video_keys, self.state_keys, self.action_keys = list(video_keys), list(state_keys), list(action_keys)
        self.language_keys = list(LANGUAGE_KEYS)
        self.action_horizon = None if action_horizon is None else int(action_horizon)

    def modality_config(self):
        from starVLA.dataloader.gr00t_lerobot.datasets import ModalityConfig

        horizon = self.action_horizon if self.action_horizon is not None else action_horizon_from_command(sys.argv)
        now = [0]
        return {
            "video": ModalityConfig(delta_indices=now, modality_keys=self.video_keys),
            "state": ModalityConfig(delta_indices=now, modality_keys=self.state_keys),
            "action": ModalityConfig(delta_indices=list(range(horizon)), modality_keys=self.action_keys),
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

    spec = [(folder, 1.0, robot_type)]
    taken = (registry.DATASET_NAMED_MIXTURES.get(mixture, spec) != spec
             or not isinstance(registry.ROBOT_TYPE_CONFIG_MAP.get(robot_type, data_config), type(data_config)))
    if taken:  # registering again is fine (idempotent); taking one of starVLA's names is not
        raise RuntimeError(f"starVLA already has a data mixture {mixture!r} or robot type {robot_type!r} of its own; "
                           "this package will not overwrite it")
    registry.ROBOT_TYPE_CONFIG_MAP[robot_type] = data_config
    registry.DATASET_NAMED_MIXTURES[mixture] = spec
    tags = getattr(registry, "ROBOT_TYPE_TO_EMBODIMENT_TAG", None)
    if isinstance(tags, dict):
        tags[robot_type] = data_config.embodiment_tag


# data_mix -> (folder under data_root_dir, robot_type): the datasets this package writes, all with the keys above.
BUILTIN_DATASETS = {
    "synthetic": ("synthetic", "twinbrain_synthetic"),  # starvla make-dataset
    "robosuite_lift": ("robosuite_lift", "twinbrain_robosuite"),  # eval/robosuite/to_lerobot.py (configs/robosuite_lift.yaml)
}


def register_builtin_datasets(action_horizon: int | None = None) -> None:
    """``data_mix: synthetic`` / ``robosuite_lift`` → the folders of that name written by this package. Idempotent.
    ``action_horizon=None``: each run's own (see :class:`SimpleDataConfig`)."""
    for mixture, (folder, robot_type) in BUILTIN_DATASETS.items():
        register_dataset(mixture, folder, robot_type, SimpleDataConfig(
            SYNTHETIC_VIDEO_KEYS, SYNTHETIC_STATE_KEYS, SYNTHETIC_ACTION_KEYS, action_horizon))
