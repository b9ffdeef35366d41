"""SimplerEnv WidowX (Bridge) client: observations → policy-server requests, action chunks → env actions.

The behaviour follows starVLA's ``examples/simBenchmarks/SimplerEnv/eval_files/model2simpler_interface.py``
(policy setup ``widowx_bridge``) and ``adaptive_ensemble.py``. numpy only, so it runs in the SimplerEnv environment:

    client = PolicyClient(host, port)
    policy = WidowXPolicy(client)
    policy.reset(env.get_language_instruction())
    obs, *_ = env.step(policy.step(image))    # image: uint8 [H, W, 3] from the 3rd_view_camera
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from eval.common.client import STARVLA_SAMPLING_KWARGS, resize_area

BRIDGE_UNNORM_KEY = "oxe_bridge"
BRIDGE_ACTION_DIM = 7  # xyz delta, roll/pitch/yaw delta, gripper openness (1 = open, 0 = closed)


class AdaptiveEnsembler:
    """Blends the predictions that the last ``horizon`` chunks made for the current step.

    The chunk predicted ``k`` steps ago holds its guess for now at index ``k``. Each guess is weighted by
    ``exp(alpha · cos(guess, newest guess))``, normalised to sum to 1, so guesses that agree with the newest one
    count more. starVLA uses horizon 7 and alpha 0.1 on Bridge. A chunk shorter than its age drops out (starVLA
    assumes chunks of at least ``horizon`` steps).
    """

    def __init__(self, horizon: int = 7, alpha: float = 0.1):
        if horizon < 1:
            raise ValueError(f"horizon: expected >= 1, got {horizon}")
        self.alpha = alpha
        self._chunks: deque[np.ndarray] = deque(maxlen=horizon)

    def reset(self) -> None:
        self._chunks.clear()

    def __call__(self, chunk: np.ndarray) -> np.ndarray:
        """Add the newest chunk [T, D] and return the blended action [D] for the current step."""
        self._chunks.append(np.asarray(chunk, dtype=np.float64))
        ages = range(len(self._chunks) - 1, -1, -1)  # oldest chunk first
        guesses = np.stack([c[age] for age, c in zip(ages, self._chunks) if age < len(c)])
        newest = guesses[-1]
        cosine = guesses @ newest / (np.linalg.norm(guesses, axis=1) * np.linalg.norm(newest) + 1e-7)
        weights = np.exp(self.alpha * cosine)
        return (weights / weights.sum()) @ guesses


def euler_to_axis_angle(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """Rotation vector (unit axis · angle) of the rotation Rz(yaw) · Ry(pitch) · Rx(roll).

    SimplerEnv's WidowX controller takes axis-angle deltas while Bridge actions are roll/pitch/yaw; starVLA
    converts with transforms3d's ``euler2axangle`` (static xyz axes). This goes through the same quaternion, with
    the same sign, so it gives the same vector (angle in [0, 2π]).
    """
    cr, sr = math.cos(roll / 2), math.sin(roll / 2)
    cp, sp = math.cos(pitch / 2), math.sin(pitch / 2)
    cy, sy = math.cos(yaw / 2), math.sin(yaw / 2)
    w = cr * cp * cy + sr * sp * sy
    xyz = np.array([sr * cp * cy - cr * sp * sy,
                    cr * sp * cy + sr * cp * sy,
                    cr * cp * sy - sr * sp * cy])
    sin_half = np.linalg.norm(xyz)
    if sin_half < 3 * np.finfo(np.float64).eps:  # no rotation: the axis is arbitrary
        return np.zeros(3)
    return xyz / sin_half * (2 * math.acos(min(max(w, -1.0), 1.0)))


def gripper_command(openness: float) -> float:
    """Bridge gripper openness → the WidowX gripper command: +1 opens, -1 closes (0.5 itself closes).

    Absolute, with no sticky repeats: starVLA keeps those for the Google robot only."""
    return 1.0 if openness > 0.5 else -1.0


class WidowXPolicy:
    """One request per env step: the newest camera image at 224x224, the instruction and ``unnorm_key``."""

    def __init__(self, client, unnorm_key: str = BRIDGE_UNNORM_KEY, image_size: tuple[int, int] = (224, 224),
                 ensemble_horizon: int = 7, ensemble_alpha: float = 0.1, action_scale: float = 1.0):
        action_dim = client.metadata.get("action_dim")
        if action_dim not in (None, BRIDGE_ACTION_DIM):
            raise ValueError(f"the server's policy predicts {action_dim}-d actions; WidowX Bridge needs "
                             f"{BRIDGE_ACTION_DIM} (xyz, roll/pitch/yaw, gripper)")
        self.client = client
        self.unnorm_key = unnorm_key
        self.image_size = tuple(image_size)
        self.action_scale = action_scale
        self.ensembler = AdaptiveEnsembler(ensemble_horizon, ensemble_alpha)
        self.task_description: str | None = None
        self.last_sent_image: np.ndarray | None = None  # the image of the latest request, for recording

    def reset(self, task_description: str) -> None:
        """Start an episode: forget the chunks predicted for the previous one."""
        self.task_description = task_description
        self.ensembler.reset()

    def step(self, image: np.ndarray, task_description: str | None = None) -> np.ndarray:
        """The env action [7]: xyz delta, axis-angle rotation delta, gripper ±1. A new instruction resets."""
        if task_description is not None and task_description != self.task_description:
            self.reset(task_description)
        if self.task_description is None:
            raise RuntimeError("call reset(task_description) before step()")
        self.last_sent_image = resize_area(image, self.image_size)
        example = {"image": [self.last_sent_image], "lang": self.task_description}
        chunk = self.client.predict_action([example], unnorm_key=self.unnorm_key, **STARVLA_SAMPLING_KWARGS)[0]
        action = self.ensembler(chunk)
        rotation = euler_to_axis_angle(*action[3:6])
        return np.concatenate([action[:3] * self.action_scale, rotation * self.action_scale,
                               [gripper_command(action[6])]])
