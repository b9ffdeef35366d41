"""starVLA's action/state normalisation, in numpy only (the policy client uses it in simulator environments).

"q99" maps [q01, q99] to [-1, 1] and clips; "min_max" maps [min, max] to [-1, 1]. Statistics are laid out as in a
run's ``dataset_statistics.json``: ``{"q01": [D], "q99": [D], "min": [D], "max": [D], "mask": [D], ...}``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Normalization = Literal["q99", "min_max"]
STAT_NAMES = ("min", "max", "mean", "std", "q01", "q99")


def _bounds(stats: dict, mode: Normalization) -> tuple[np.ndarray, np.ndarray]:
    if mode not in ("q99", "min_max"):
        raise ValueError(f"normalization={mode!r}: expected q99 | min_max")
    low, high = ("q01", "q99") if mode == "q99" else ("min", "max")
    return np.asarray(stats[low], dtype=np.float32), np.asarray(stats[high], dtype=np.float32)


def normalize(x: np.ndarray, stats: dict, mode: Normalization = "q99") -> np.ndarray:
    """[low, high] → [-1, 1], clipped; dimensions with ``mask`` False or zero range pass through unchanged."""
    low, high = _bounds(stats, mode)
    mask = np.asarray(stats.get("mask", np.ones_like(low, dtype=bool)), dtype=bool) & (high > low)
    scaled = np.clip(2 * (x - low) / np.where(mask, high - low, 1) - 1, -1, 1)
    return np.where(mask, scaled, x).astype(np.float32)


def unnormalize(x: np.ndarray, stats: dict, mode: Normalization = "q99") -> np.ndarray:
    """Inverse of :func:`normalize` on its range: [-1, 1] → [low, high]."""
    low, high = _bounds(stats, mode)
    mask = np.asarray(stats.get("mask", np.ones_like(low, dtype=bool)), dtype=bool) & (high > low)
    return np.where(mask, (np.clip(x, -1, 1) + 1) / 2 * (high - low) + low, x).astype(np.float32)
