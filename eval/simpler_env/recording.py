"""Debug recording of Bridge episodes (``run_bridge --record DIR``): what the env rendered, what the server was sent,
what the robot was commanded and where its end effector went, for ``check_run`` and for a person to look at.

Per episode ``<task>_ep<i>`` it writes:

- ``.npz``: ``sent`` uint8 [T, 224, 224, 3] (every image sent), ``frames`` uint8 [K, H, W, 3] (the camera frame the
  env rendered at ``frame_steps``, every ``frame_every``-th step and the last), ``actions`` [T, 7] (the env actions
  commanded), ``ee_positions`` [T + 1, 3] (end effector in the robot base frame, before each step and after the last);
- ``.mp4``: the camera frame with, beside it, the image sent and the commanded action as bars (5 fps, the control
  rate); ``_still.png``: the video's frame at the recorded step nearest a quarter of the episode (before
  an arm driven by an untrained policy has left the view).

Video and still need OpenCV (SimplerEnv installs it); the arrays do not.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ACTION_NAMES = ("x", "y", "z", "roll", "pitch", "yaw", "grip")
PANEL_WIDTH = 260
# bar half-length = this much action: 3 cm / 0.15 rad per step is a large Bridge step; the gripper command is ±1
ACTION_FULL_SCALE = np.array([0.03, 0.03, 0.03, 0.15, 0.15, 0.15, 1.0])


def compose_frame(frame: np.ndarray, sent: np.ndarray, action: np.ndarray, caption: str) -> np.ndarray:
    """RGB uint8 [H, W + PANEL_WIDTH, 3]: the camera frame, and beside it the image sent (top) and the action bars."""
    import cv2

    height = frame.shape[0]
    panel = np.full((height, PANEL_WIDTH, 3), 30, np.uint8)
    top = 18
    cv2.putText(panel, f"sent {sent.shape[1]}x{sent.shape[0]}", (8, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                (220, 220, 220), 1, cv2.LINE_AA)
    size = min(sent.shape[0], PANEL_WIDTH - 16, height // 2)
    panel[top:top + size, 8:8 + size] = cv2.resize(sent, (size, size), interpolation=cv2.INTER_AREA)
    row, centre, half = (height - top - size - 10) / len(ACTION_NAMES), 150, 90
    for i, (name, value, scale) in enumerate(zip(ACTION_NAMES, action, ACTION_FULL_SCALE)):
        y = int(top + size + 10 + (i + 0.5) * row)
        length = int(np.clip(value / scale, -1, 1) * half)
        cv2.line(panel, (centre, y - 8), (centre, y + 8), (120, 120, 120), 1)
        cv2.rectangle(panel, (centre + min(length, 0), y - 5), (centre + max(length, 0), y + 5),
                      (90, 200, 90) if value >= 0 else (220, 110, 80), -1)
        text = f"{name} {value:+.3f}" if i < 6 else f"{name} {'open' if value > 0 else 'close'}"
        cv2.putText(panel, text, (6, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (230, 230, 230), 1, cv2.LINE_AA)
    out = np.concatenate([frame, panel], axis=1)
    cv2.putText(out, caption, (8, height - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(out, caption, (8, height - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return out


class EpisodeRecorder:
    """Collects one episode; ``finish`` writes it. ``video=False`` writes the arrays only (no OpenCV needed)."""

    def __init__(self, folder: str | Path, name: str, frame_every: int = 10, video: bool = True, fps: int = 5):
        if frame_every < 1:
            raise ValueError(f"frame_every: expected >= 1, got {frame_every}")
        self.path = Path(folder) / name
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.frame_every, self.video, self.fps = frame_every, video, fps
        self.sent, self.actions, self.ee_positions, self.frames, self.frame_steps = [], [], [], [], []
        self._writer = None
        self._last: tuple[np.ndarray, int] | None = None  # the latest frame and its step
        self._composites: dict[int, np.ndarray] = {}  # the video frames at frame_steps, for the still

    def add(self, frame: np.ndarray, sent: np.ndarray, action: np.ndarray, ee_position: np.ndarray,
            instruction: str) -> None:
        """One step, before the env executes ``action``: the frame the env rendered, the image sent to the server,
        the env action and the end effector position (robot base frame)."""
        step = len(self.actions)
        self.sent.append(np.asarray(sent, np.uint8).copy())
        self.actions.append(np.asarray(action, np.float64).copy())
        self.ee_positions.append(np.asarray(ee_position, np.float64).copy())
        if step % self.frame_every == 0:
            self.frames.append(np.asarray(frame, np.uint8).copy())
            self.frame_steps.append(step)
        self._last = (frame, step)
        if self.video:
            self._write(compose_frame(frame, sent, action, f"step {step}: {instruction}"), step)

    def _write(self, image: np.ndarray, step: int) -> None:
        import cv2

        if self._writer is None:
            self._writer = cv2.VideoWriter(str(self.path.with_suffix(".mp4")), cv2.VideoWriter_fourcc(*"mp4v"),
                                           self.fps, (image.shape[1], image.shape[0]))
        self._writer.write(np.ascontiguousarray(image[..., ::-1]))  # OpenCV writes BGR
        if step % self.frame_every == 0:
            self._composites[step] = image

    def finish(self, ee_position: np.ndarray) -> Path:
        """End the episode with the end effector position after its last step; returns the ``.npz`` path."""
        if not self.actions:
            raise RuntimeError("finish: no steps were recorded")
        frame, step = self._last
        if self.frame_steps[-1] != step:
            self.frames.append(np.asarray(frame, np.uint8).copy())
            self.frame_steps.append(step)
        self.ee_positions.append(np.asarray(ee_position, np.float64).copy())
        path = self.path.with_suffix(".npz")
        np.savez_compressed(path, sent=np.stack(self.sent), frames=np.stack(self.frames),
                            frame_steps=np.array(self.frame_steps), actions=np.stack(self.actions),
                            ee_positions=np.stack(self.ee_positions))
        if self._writer is not None:
            import cv2

            self._writer.release()
            quarter = min(self._composites, key=lambda s: abs(s - len(self.actions) // 4))
            cv2.imwrite(str(self.path.parent / f"{self.path.name}_still.png"), self._composites[quarter][..., ::-1])
        return path
