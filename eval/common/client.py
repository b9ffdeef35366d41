"""Pieces both simulator clients share: image resizing as starVLA's clients do it, the sampling fields starVLA's
clients put in every request, and the resumable results file. numpy only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

# starVLA's clients send these with every request; its diffusion action heads read them, TwinBrain ignores them.
STARVLA_SAMPLING_KWARGS = {"do_sample": False, "use_ddim": True, "num_ddim_steps": 10}


def _area_taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray]:
    """Along one axis, for each destination pixel: the source pixels its footprint touches [dst, taps] and the
    share of the footprint each covers (rows sum to 1). Few taps per pixel, so resizing costs little."""
    scale = src / dst
    low = np.arange(dst)[:, None] * scale  # footprint [low, low + scale) in source pixels
    pixels = np.floor(low).astype(int) + np.arange(int(np.ceil(scale)) + 1)
    share = np.clip(np.minimum(low + scale, pixels + 1) - np.maximum(low, pixels), 0.0, None) / scale
    return np.minimum(pixels, src - 1), share  # taps past the edge have share 0


def resize_area(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 [H, W, C] → uint8 [size[0], size[1], C] by pixel-area averaging.

    starVLA's clients use ``cv2.resize(..., INTER_AREA)``; this matches it to within one intensity level (rounding)
    without needing OpenCV in the simulator's environment.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3:
        raise ValueError(f"image: expected a uint8 array [H, W, C], got {image.dtype} {list(image.shape)}")
    height, width = size
    if image.shape[:2] == (height, width):
        return image
    row_pixels, row_share = _area_taps(image.shape[0], height)
    col_pixels, col_share = _area_taps(image.shape[1], width)
    rows = np.einsum("yt,ytxc->yxc", row_share, image[row_pixels].astype(np.float64))
    resized = np.einsum("xt,yxtc->yxc", col_share, rows[:, col_pixels])
    return np.clip(np.rint(resized), 0, 255).astype(np.uint8)


def record_episodes(path: Path, record: dict, episodes: int, run_episode: Callable[[int], dict], label: str) -> Path:
    """Run ``run_episode(i)`` for each episode, appending to ``record["episodes"]`` and rewriting ``path`` after
    each, so a crashed sweep keeps what it finished; ``record["complete"]`` marks a file a re-run may skip."""
    for episode in range(episodes):
        record["episodes"].append(run_episode(episode))
        record["complete"] = episode == episodes - 1
        path.write_text(json.dumps(record, indent=1))
        successes = sum(e["success"] for e in record["episodes"])
        print(f"{label} episode {episode}: success={record['episodes'][-1]['success']} "
              f"({successes}/{len(record['episodes'])})", flush=True)
    return path
