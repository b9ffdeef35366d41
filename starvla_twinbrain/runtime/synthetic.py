"""A small LeRobot v3.0 dataset whose actions are learnable from the observation, written with lerobot itself.

Each episode has a target on a table: the camera image shows a coloured square at the target, the state is the
gripper position (x, y) plus the target's colour code and padding, and the action is a proportional controller::

    action[:2] = clip(gain * (target - position), -1, 1);  action[2:6] = 0;  action[6] = +1 if near target else -1
    position  += 0.1 * action[:2]

so a policy that reads the target from the image and the position from the state can reproduce it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import numpy as np

TASKS = ["move to the red square", "move to the green square", "move to the blue square"]
COLOURS = np.array([[230, 40, 40], [40, 200, 60], [50, 80, 230]], dtype=np.uint8)


def _render(target: np.ndarray, colour: np.ndarray, size: int) -> np.ndarray:
    image = np.full((size, size, 3), 235, dtype=np.uint8)
    cx, cy = ((target + 1) / 2 * (size - 1)).astype(int)
    half = max(size // 10, 2)
    image[max(cy - half, 0): cy + half + 1, max(cx - half, 0): cx + half + 1] = colour
    return image


def make_synthetic_dataset(
    root: str | Path,
    *,
    num_episodes: int = 16,
    episode_length: int = 30,
    image_size: int = 64,
    state_dim: int = 7,
    action_dim: int = 7,
    fps: int = 10,
    seed: int = 0,
) -> Path:
    """Write the dataset to ``root`` (images stored as frames, no video encoding) and return ``root``."""
    if state_dim < 3 or action_dim < 7:
        raise ValueError("make_synthetic_dataset: needs state_dim >= 3 and action_dim >= 7")

    def episodes():
        rng = np.random.default_rng(seed)
        for episode in range(num_episodes):
            kind = episode % len(TASKS)
            target = rng.uniform(-0.7, 0.7, 2).astype(np.float32)
            position = rng.uniform(-0.9, 0.9, 2).astype(np.float32)
            image = _render(target, COLOURS[kind], image_size)
            states, actions = [], []
            for _ in range(episode_length):
                action = np.zeros(action_dim, dtype=np.float32)
                action[:2] = np.clip(3.0 * (target - position), -1, 1)
                action[6] = 1.0 if np.linalg.norm(target - position) < 0.1 else -1.0
                state = np.zeros(state_dim, dtype=np.float32)
                state[:2], state[2] = position, kind
                states.append(state), actions.append(action)
                position = np.clip(position + 0.1 * action[:2], -1, 1)
            yield {"image": np.repeat(image[None], episode_length, 0), "state": np.stack(states),
                   "action": np.stack(actions), "task": TASKS[kind]}

    return write_lerobot_dataset(root, episodes(), fps=fps, robot_type="point_mass_2d")


def write_lerobot_dataset(root: str | Path, episodes: Iterable[dict], fps: int, robot_type: str | None = None) -> Path:
    """Episodes ``{"image": uint8 [T, H, W, 3], "state": [T, S], "action": [T, A], "task": str}`` → a LeRobot v3.0
    dataset at ``root`` written by lerobot's ``LeRobotDataset`` (one camera ``observation.images.cam``, images
    stored as frames), plus GR00T's ``meta/modality.json``. ``robot_type`` goes to ``meta/info.json`` (the Right
    prompt's "Robot Type:")."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    root, dataset = Path(root), None
    for episode in episodes:
        image, state, action = (np.asarray(episode[k]) for k in ("image", "state", "action"))
        if dataset is None:
            features = {
                "observation.images.cam": {"dtype": "image", "shape": image.shape[1:],
                                           "names": ["height", "width", "channels"]},
                "observation.state": {"dtype": "float32", "shape": state.shape[1:], "names": None},
                "action": {"dtype": "float32", "shape": action.shape[1:], "names": None},
            }
            # Frames, not video, so no decoder is needed; naming pyav skips lerobot's torchcodec probe.
            dataset = LeRobotDataset.create(f"local/{root.name}", fps=fps, features=features, root=root,
                                            robot_type=robot_type, use_videos=False, video_backend="pyav")
        for t in range(len(action)):
            dataset.add_frame({"observation.images.cam": image[t], "observation.state": state[t].astype(np.float32),
                               "action": action[t].astype(np.float32), "task": str(episode["task"])})
        dataset.save_episode()
    if dataset is None:
        raise ValueError(f"write_lerobot_dataset({root}): no episodes")
    dataset.finalize()
    _write_modality(root, state.shape[1], action.shape[1])
    return root


def _write_modality(root: Path, state_dim: int, action_dim: int) -> None:
    """GR00T's ``meta/modality.json`` (keys as in :mod:`starvla_twinbrain.host.data`), so starVLA's own reader
    takes the dataset too (``lerobot_version: v3.0``)."""
    modality = {
        "state": {"state": {"start": 0, "end": state_dim, "original_key": "observation.state"}},
        "action": {"action": {"start": 0, "end": action_dim, "original_key": "action"}},
        "video": {"cam": {"original_key": "observation.images.cam"}},
        "annotation": {"human.action.task_description": {"original_key": "task_index"}},
    }
    (root / "meta" / "modality.json").write_text(json.dumps(modality, indent=2))
