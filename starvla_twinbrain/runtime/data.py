"""LeRobot v3.0 datasets → starVLA training examples, through the ``lerobot`` package's ``LeRobotDataset``.

One example: ``{"image": [PIL RGB, one per camera], "lang": task, "action": float16 [T, action_dim] normalised,
"state": float16 [1, state_dim] normalised (when include_state), "robot_type": meta/info.json's robot_type (when
set), "episode_index": int, "frame_index": int}`` (the indices name the row in errors). The action chunk starts at
the current frame
(delta timestamps 0, 1/fps, ..., (T-1)/fps); past the end of an episode lerobot repeats the last action.

Normalisation as starVLA: "q99" maps [q01, q99] to [-1, 1] and clips; "min_max" maps [min, max] to [-1, 1]. The
statistics are lerobot's own (computed once when the dataset was written, ``meta/stats.json``). They are saved in
the run's ``dataset_statistics.json`` in starVLA's layout, where the policy server reads them to un-normalise::

    {"<unnorm_key>": {"action": {"min": [D], "max": [D], "mean": [D], "std": [D], "q01": [D], "q99": [D],
                                 "mask": [D]},
                      "state": {...}, "num_transitions": N, "num_trajectories": E,
                      "robot_type": str | null}}

``robot_type`` is the dataset's (``meta/info.json``), which the Right prompt's "Robot Type:" line read in training;
the server uses it as the default for requests under that key (null: the prompts' default).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from ..config import DEFAULT_OBS_IMAGE_SIZE
from ..model.prompts import image_tensor_to_pil
from ..normalization import STAT_NAMES, Normalization, normalize, unnormalize  # noqa: F401  (re-exported)

logger = logging.getLogger(__name__)


def save_statistics(statistics: dict, path: str | Path) -> None:
    Path(path).write_text(json.dumps(statistics, indent=2))


def load_statistics(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


# datasets.vla_data.video_backend → lerobot's decoder (starVLA's YAMLs say torchvision_av for PyAV).
VIDEO_BACKENDS = {None: None, "pyav": "pyav", "torchvision_av": "pyav", "torchcodec": "torchcodec"}


class LeRobotVLADataset(Dataset):
    """A local LeRobot v3.0 dataset as starVLA examples. Never touches the network.

    Args:
        root: the dataset folder (``meta/info.json``, ``data/``, ...).
        action_horizon: T, the action chunk length (``framework.action_model.action_horizon``).
        include_state: add ``"state"`` (``datasets.vla_data.include_state``).
        video_backend: ``datasets.vla_data.video_backend``: ``pyav`` (starVLA's ``torchvision_av`` means the same)
            or ``torchcodec``; default: lerobot's choice.
        image_keys: camera features to use, in order (default: all of the dataset's cameras).
        expected_action_dim / expected_state_dim: the config's sizes, checked against the data.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        action_horizon: int,
        include_state: bool,
        image_keys: list[str] | None = None,
        state_key: str = "observation.state",
        action_key: str = "action",
        image_size: tuple[int, int] | int = DEFAULT_OBS_IMAGE_SIZE,  # (height, width), or one side
        normalization: Normalization = "q99",
        unnorm_key: str | None = None,
        expected_action_dim: int | None = None,
        expected_state_dim: int | None = None,
        video_backend: str | None = None,
    ):
        from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata

        self.root = Path(root)
        where = f"dataset {self.root}"
        if not (self.root / "meta" / "info.json").is_file():
            raise FileNotFoundError(f"{where}: not a LeRobot dataset (no meta/info.json); check datasets.vla_data.data_root_dir / data_mix")
        if not isinstance(action_horizon, int) or action_horizon < 1:
            raise ValueError(f"framework.action_model.action_horizon={action_horizon!r}: expected a positive integer")
        repo_id = f"local/{self.root.name}"
        meta = LeRobotDatasetMetadata(repo_id, root=self.root)
        features = meta.features
        cameras = list(image_keys) if image_keys else list(meta.camera_keys)
        required = [action_key, *cameras] + ([state_key] if include_state else [])
        for key in required:
            if key not in features:
                raise ValueError(f"{where} has no feature {key!r} (it has: {', '.join(features)})")
        if not cameras:
            raise ValueError(f"{where} has no camera feature: TwinBrain needs at least one image")
        self.action_dim = int(features[action_key]["shape"][0])
        if expected_action_dim is not None and expected_action_dim != self.action_dim:
            raise ValueError(f"framework.action_model.action_dim={expected_action_dim} but {where} has "
                             f"{action_key!r} of size {self.action_dim}")
        self.state_dim = int(features[state_key]["shape"][0]) if include_state else None
        if include_state and expected_state_dim is not None and expected_state_dim != self.state_dim:
            raise ValueError(f"framework.action_model.state_dim={expected_state_dim} but {where} has "
                             f"{state_key!r} of size {self.state_dim}")

        if video_backend not in VIDEO_BACKENDS:
            raise ValueError(f"datasets.vla_data.video_backend={video_backend!r}: expected one of "
                             f"{', '.join(k for k in VIDEO_BACKENDS if k)} (lerobot decodes with pyav or torchcodec)")
        fps = meta.fps
        self.dataset = LeRobotDataset(repo_id, root=self.root, video_backend=VIDEO_BACKENDS[video_backend],
                                      delta_timestamps={action_key: [i / fps for i in range(action_horizon)]})
        self.cameras, self.state_key, self.action_key = cameras, state_key, action_key
        self.include_state, self.normalization = include_state, normalization
        self.image_size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        self.unnorm_key = unnorm_key or self.root.name
        robot_type = meta.info.get("robot_type")
        self.robot_type = robot_type if isinstance(robot_type, str) and robot_type.strip() else None
        self.statistics = self._statistics(meta)

    def _statistics(self, meta) -> dict:
        def pick(key: str) -> dict:
            stats = meta.stats[key]
            out = {name: np.asarray(stats[name], dtype=np.float64).reshape(-1).tolist() for name in STAT_NAMES}
            out["mask"] = [True] * len(out["min"])
            return out

        entry = {"action": pick(self.action_key), "num_transitions": int(meta.total_frames),
                 "num_trajectories": int(meta.total_episodes), "robot_type": self.robot_type}
        if self.include_state:
            entry["state"] = pick(self.state_key)
        return {self.unnorm_key: entry}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        item = self.dataset[index]
        stats = self.statistics[self.unnorm_key]
        images = [image_tensor_to_pil(item[key], f"{self.root}: {key}", self.image_size) for key in self.cameras]
        action = normalize(item[self.action_key].numpy(), stats["action"], self.normalization)
        example = {"image": images, "lang": item["task"], "action": action.astype(np.float16),
                   "episode_index": int(item["episode_index"]), "frame_index": int(item["frame_index"])}
        if self.robot_type is not None:
            example["robot_type"] = self.robot_type
        if self.include_state:
            state = normalize(item[self.state_key].numpy(), stats["state"], self.normalization)
            example["state"] = state[None].astype(np.float16)
        return example
