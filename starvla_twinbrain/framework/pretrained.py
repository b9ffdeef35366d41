"""Loading a trained TwinBrain: ``load_framework`` (the embedded host's ``from_pretrained``) and the checkpoint-file
checks it needs. Writing checkpoints (atomic saves, manifests, resume) is the runtime's (runtime/checkpoint.py);
serving, the LeRobot policy and eval load through here, so none of them imports the runtime.

A model file may have a ``<file>.sha256`` beside it (the runtime writes one); loading checks it, so a file changed or
damaged after it was written is refused. Nothing is unpickled beyond tensors and plain types
(``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: Path) -> None:
    """Refuse a file whose content no longer matches its ``.sha256`` (files without one are not checked)."""
    record = path.with_name(path.name + ".sha256")
    if not record.is_file():
        return
    expected, actual = record.read_text().split()[0], file_sha256(path)
    if expected != actual:
        raise ValueError(f"checkpoint {path} fails its SHA-256 check (recorded {expected[:16]}…, file has "
                         f"{actual[:16]}…): it was modified or damaged after it was written")


def load_state_dict(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    verify_sha256(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated or corrupt file: say which and why
        raise ValueError(f"checkpoint {path} cannot be read ({type(err).__name__}: {err})") from None


def run_dir_of(checkpoint: str | Path) -> Path:
    """``<run>/checkpoints/steps_N_...`` or ``<run>/final_model/pytorch_model.pt`` → ``<run>`` (as starVLA)."""
    return Path(checkpoint).resolve().parent.parent


def load_framework(checkpoint: str | Path, **config_overrides):
    """The embedded host's ``from_pretrained``: rebuild from ``<run>/config.yaml``, load the weights strictly,
    attach ``norm_stats`` from ``dataset_statistics.json``."""
    from omegaconf import OmegaConf

    from ..host.api import FRAMEWORK_REGISTRY
    from .twinbrain import register

    register()
    run_dir = run_dir_of(checkpoint)
    config_file = run_dir / "config.yaml"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} not found: expected a run directory around {checkpoint}")
    cfg = OmegaConf.load(config_file)
    for key, value in config_overrides.items():
        OmegaConf.update(cfg, key, value)
    model = FRAMEWORK_REGISTRY[cfg.framework.name](cfg)
    model.load_state_dict(load_state_dict(checkpoint), strict=True)
    stats_file = run_dir / "dataset_statistics.json"
    model.norm_stats = json.loads(stats_file.read_text()) if stats_file.is_file() else None
    return model
