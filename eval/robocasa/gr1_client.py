"""RoboCasa GR1 tabletop client: GR1 observations → policy-server requests, action chunks → per-step env actions.

The behaviour follows starVLA's ``examples/simBenchmarks/Robocasa_tabletop/eval_files/model2robocasa_interface.py``
(observation keys, sin/cos state, action groups) and ``simulation_env.py`` / ``batch_eval_args.sh`` (12 actions
executed open-loop per query). numpy only, so it runs in the RoboCasa environment:

    policy = GR1Policy(PolicyClient(host, port))
    obs, _ = env.reset(); policy.reset()
    obs, reward, terminated, truncated, info = env.step(policy.act(obs))
"""

from __future__ import annotations

from collections import deque

import numpy as np

from eval.common.client import STARVLA_SAMPLING_KWARGS, resize_area

# GR1 arms + waist + Fourier hands: the joint groups, in the order of both the state and the action vector.
JOINT_GROUPS = {"left_arm": 7, "right_arm": 7, "left_hand": 6, "right_hand": 6, "waist": 3}
NUM_JOINTS = sum(JOINT_GROUPS.values())  # 29
STATE_DIM = 2 * NUM_JOINTS  # 58: each joint as (sin, cos)
LANGUAGE_KEY = "annotation.human.coarse_action"
# The env's camera key, and the name starVLA's runner renames it to.
IMAGE_KEYS = ("video.ego_view", "video.ego_view_bg_crop_pad_res256_freq20")


def state_features(obs: dict) -> np.ndarray:
    """float32 [1, 58]: per joint group, the sines of its joint angles then their cosines.

    Layout [sin(left_arm) cos(left_arm) sin(right_arm) cos(right_arm) ... sin(waist) cos(waist)], as starVLA's
    ``normalize_state`` builds it: angles wrap around, so training saw them as sin/cos rather than radians."""
    blocks = []
    for group, size in JOINT_GROUPS.items():
        angles = np.asarray(obs[f"state.{group}"], dtype=np.float64).reshape(-1, size)[-1]  # newest frame
        blocks += [np.sin(angles), np.cos(angles)]
    return np.concatenate(blocks).astype(np.float32)[None]


def split_actions(chunk: np.ndarray) -> dict[str, np.ndarray]:
    """[T, 29] → ``{"action.left_arm": [T, 7], "action.right_arm": [T, 7], "action.left_hand": [T, 6],
    "action.right_hand": [T, 6], "action.waist": [T, 3]}``, the env's action keys."""
    chunk = np.asarray(chunk)
    if chunk.shape[-1] != NUM_JOINTS:
        raise ValueError(f"action chunk: expected {NUM_JOINTS} values per step, got {chunk.shape[-1]}")
    bounds = np.cumsum([0, *JOINT_GROUPS.values()])
    return {f"action.{group}": chunk[..., lo:hi] for group, lo, hi in zip(JOINT_GROUPS, bounds[:-1], bounds[1:])}


def _instruction(value) -> str:
    """The env gives the instruction as a string, or wrapped in a 1-element tuple / array once batched."""
    while not isinstance(value, str):
        value = np.asarray(value, dtype=object).reshape(-1)[0]
    return value


def _image(obs: dict) -> np.ndarray:
    for key in IMAGE_KEYS:
        if key in obs:
            frames = np.asarray(obs[key])
            return frames.reshape(-1, *frames.shape[-3:])[-1]  # newest frame [H, W, 3]
    raise KeyError(f"no camera image in the observation: expected one of {IMAGE_KEYS}, got {sorted(obs)}")


class GR1Policy:
    """Queries the server when its action queue is empty and then plays ``n_action_steps`` actions open-loop."""

    def __init__(self, client, unnorm_key: str | None = None, image_size: tuple[int, int] = (224, 224),
                 n_action_steps: int = 12, send_state: bool | None = None):
        """``unnorm_key`` None lets the server pick its default. ``send_state`` None follows the server's
        ``include_state``: starVLA's GR00T-style checkpoints need the state, its OFT checkpoint must not get it."""
        meta = client.metadata
        self.send_state = bool(meta.get("include_state", True)) if send_state is None else send_state
        if self.send_state and meta.get("state_dim") not in (None, STATE_DIM):
            raise ValueError(f"the server's policy takes a {meta['state_dim']}-d state; the GR1 client sends "
                             f"{STATE_DIM} (sin and cos of {NUM_JOINTS} joints)")
        if meta.get("action_dim") not in (None, NUM_JOINTS):
            raise ValueError(f"the server's policy predicts {meta['action_dim']}-d actions; GR1 needs {NUM_JOINTS}")
        if n_action_steps < 1:
            raise ValueError(f"n_action_steps: expected >= 1, got {n_action_steps}")
        self.client = client
        self.unnorm_key = unnorm_key
        self.image_size = tuple(image_size)
        self.n_action_steps = n_action_steps
        self.task_description: str | None = None
        self._queue: deque[np.ndarray] = deque()

    def reset(self, task_description: str | None = None) -> None:
        """Start an episode: drop the actions left over from the previous one."""
        self.task_description = task_description
        self._queue.clear()

    def request(self, obs: dict) -> dict:
        """The request example starVLA's GR1 client builds: one 224x224 image, the instruction, the sin/cos state."""
        example = {"image": [resize_area(_image(obs), self.image_size)], "lang": _instruction(obs[LANGUAGE_KEY])}
        if self.send_state:
            example["state"] = state_features(obs)
        return example

    def act(self, obs: dict) -> dict[str, np.ndarray]:
        """The next env action ``{"action.left_arm": [7], ...}``; queries the server once per ``n_action_steps``."""
        instruction = _instruction(obs[LANGUAGE_KEY])
        if instruction != self.task_description:
            self.reset(instruction)
        if not self._queue:
            kwargs = {} if self.unnorm_key is None else {"unnorm_key": self.unnorm_key}
            chunk = self.client.predict_action([self.request(obs)], **kwargs, **STARVLA_SAMPLING_KWARGS)[0]
            self._queue.extend(chunk[: self.n_action_steps])
        return split_actions(self._queue.popleft())
