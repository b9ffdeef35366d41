"""Run directories and checkpoints in starVLA's layout, written atomically, and loading them back.

    <run_root_dir>/<run_id>/
      config.yaml, config.full.yaml, dataset_statistics.json, summary.jsonl, loss_curve.png, tensorboard/
      checkpoints/steps_<N>_pytorch_model.pt      the model state_dict (starVLA's format; Left Brain by reference)
      checkpoints/steps_<N>_trainer_state.pt      optimizer, scheduler, step, data position, RNG (resume only)
      final_model/pytorch_model.pt

A checkpoint is complete once its trainer state exists: it is written last, and every file is written to a
temporary name and renamed, so a killed run never leaves a half file under a real name. Each file gets a
``<file>.sha256`` beside it; loading checks it, so a file changed or damaged after it was written is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import torch

MODEL_FILE = "steps_{step}_pytorch_model.{ext}"
STATE_FILE = "steps_{step}_trainer_state.pt"
_STEP = re.compile(r"steps_(\d+)_trainer_state\.pt$")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_save(obj, path: Path) -> None:
    """Write to a temporary name, rename, then record the SHA-256 in ``<path>.sha256``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in obj.items()}, str(tmp))
    else:
        torch.save(obj, tmp)
    digest = file_sha256(tmp)
    os.replace(tmp, path)
    atomic_write_text(f"{digest}  {path.name}\n", path.with_name(path.name + ".sha256"))


def verify_sha256(path: Path) -> None:
    """Refuse a file whose content no longer matches its ``.sha256`` (files without one are not checked)."""
    record = path.with_name(path.name + ".sha256")
    if not record.is_file():
        return
    expected, actual = record.read_text().split()[0], file_sha256(path)
    if expected != actual:
        raise ValueError(f"checkpoint {path} fails its SHA-256 check (recorded {expected[:16]}…, file has "
                         f"{actual[:16]}…): it was modified or damaged after it was written")


def atomic_write_text(text: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def load_trainer_state(path: Path) -> dict:
    """The optimizer / scheduler / RNG / data-position state of a checkpoint (pickled: our own file)."""
    verify_sha256(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise ValueError(f"trainer state {path} cannot be read ({type(err).__name__}: {err})") from None


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


def save_checkpoint(run_dir: Path, step: int, model_state: dict, trainer_state: dict, save_format: str = "pt") -> Path:
    ext = "safetensors" if save_format == "safetensors" else "pt"
    model_path = run_dir / "checkpoints" / MODEL_FILE.format(step=step, ext=ext)
    atomic_save(model_state, model_path)
    atomic_save(trainer_state, run_dir / "checkpoints" / STATE_FILE.format(step=step))  # last: marks complete
    return model_path


def latest_checkpoint(run_dir: Path) -> tuple[int, Path, Path] | None:
    """(step, model file, trainer state file) of the newest complete checkpoint, or None."""
    found = []
    for state in (run_dir / "checkpoints").glob("steps_*_trainer_state.pt"):
        step = int(_STEP.search(state.name).group(1))
        for ext in ("pt", "safetensors"):
            model = state.with_name(MODEL_FILE.format(step=step, ext=ext))
            if model.is_file():
                found.append((step, model, state))
    return max(found) if found else None


def remove_partial_files(run_dir: Path) -> list[Path]:
    """Delete the temporaries a killed run left behind (never loaded: they never got a real name)."""
    partial = [p for d in (run_dir / "checkpoints", run_dir / "final_model", run_dir) if d.is_dir()
               for p in d.glob(".*.tmp-*")]
    for path in partial:
        path.unlink()
    return partial


def truncate_summary(path: Path, step: int) -> None:
    """Keep the ``summary.jsonl`` rows up to ``step`` (a resumed run logs the later steps again)."""
    if path.is_file():
        rows = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
        atomic_write_text("".join(row + "\n" for row in rows), path)


def run_dir_of(checkpoint: str | Path) -> Path:
    """``<run>/checkpoints/steps_N_...`` or ``<run>/final_model/pytorch_model.pt`` → ``<run>`` (as starVLA)."""
    return Path(checkpoint).resolve().parent.parent


def load_framework(checkpoint: str | Path, **config_overrides):
    """The embedded host's ``from_pretrained``: rebuild from ``<run>/config.yaml``, load the weights strictly,
    attach ``norm_stats`` from ``dataset_statistics.json``."""
    from omegaconf import OmegaConf

    from ..framework.host_api import FRAMEWORK_REGISTRY
    from ..framework.twinbrain import register

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
