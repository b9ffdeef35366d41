"""Run directories and checkpoints in starVLA's layout, written atomically, and loading them back.

    <run_root_dir>/<run_id>/
      config.yaml, config.full.yaml, dataset_statistics.json, summary.jsonl, loss_curve.png, tensorboard/
      checkpoints/steps_<N>_pytorch_model.pt      the model state_dict (starVLA's format; Left Brain by reference)
      checkpoints/steps_<N>_trainer_state/        accelerate's save_state (resume only): optimizer (or DeepSpeed's
                                                  shards), per-rank RNG states incl. CUDA, and progress.json (step,
                                                  scheduler, loss history); sha256sums.txt lists every file
      final_model/pytorch_model.pt

A checkpoint is complete once its trainer-state folder exists under its real name: it is written last, under a
temporary name, and renamed; every other file is also written to a temporary name and renamed, so a killed run
never leaves a half file under a real name. Each model file gets a ``<file>.sha256`` beside it and each state
folder a ``sha256sums.txt``; loading checks them (model files: framework/pretrained.py), so a file changed or
damaged after it was written is refused. Nothing is unpickled beyond tensors and plain types
(``torch.load(weights_only=True)``): a checkpoint from an untrusted run cannot execute code.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import torch

# Reading model files is the framework's (serving and eval load without the runtime); the trainer resumes with them.
from ..framework.pretrained import file_sha256, load_state_dict  # noqa: F401

MODEL_FILE = "steps_{step}_pytorch_model.{ext}"
STATE_DIR = "steps_{step}_trainer_state"
PROGRESS_FILE = "progress.json"
MANIFEST_FILE = "sha256sums.txt"
_STEP = re.compile(r"^steps_(\d+)_trainer_state$")


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


def atomic_write_text(text: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_manifest(folder: Path) -> None:
    """``sha256sums.txt`` in ``folder``: the digest of every file under it (``sha256sum -c`` reads it)."""
    lines = [f"{file_sha256(p)}  {p.relative_to(folder).as_posix()}\n" for p in sorted(folder.rglob("*"))
             if p.is_file() and p.name != MANIFEST_FILE]
    atomic_write_text("".join(lines), folder / MANIFEST_FILE)


def verify_manifest(folder: Path) -> None:
    """Refuse a trainer-state folder whose files differ from its ``sha256sums.txt`` (changed, missing, added)."""
    manifest = folder / MANIFEST_FILE
    if not manifest.is_file():
        raise ValueError(f"trainer state {folder} has no {MANIFEST_FILE}: it was not written by a complete save")
    recorded = dict(reversed(line.split("  ", 1)) for line in manifest.read_text().splitlines() if line.strip())
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST_FILE}
    if present != set(recorded):
        raise ValueError(f"trainer state {folder}: files {sorted(present ^ set(recorded))} differ from {MANIFEST_FILE}")
    for name, expected in recorded.items():
        actual = file_sha256(folder / name)
        if actual != expected:
            raise ValueError(f"trainer state {folder / name} fails its SHA-256 check (recorded {expected[:16]}…, file "
                             f"has {actual[:16]}…): it was modified or damaged after it was written")


def safe_load(path: Path, map_location="cpu"):
    """``torch.load(weights_only=True)``, allowing exactly the numpy types of RNG states (accelerate's list);
    anything else (a pickled callable, a class) is refused, naming the file."""
    from accelerate.utils.other import TORCH_SAFE_GLOBALS

    try:
        with torch.serialization.safe_globals(TORCH_SAFE_GLOBALS):
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise ValueError(f"trainer state {path} cannot be read with weights_only=True ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else ''}); refusing to load it") from None


def read_progress(folder: Path) -> dict:
    path = folder / PROGRESS_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"trainer state {path} cannot be read ({type(err).__name__}: {err})") from None


def load_trainer_state(folder: Path) -> dict:
    """A trainer-state folder as plain data, checked: ``progress`` (step, scheduler, losses), ``optimizer``
    (when not sharded by DeepSpeed) and ``rng`` (one dict per process)."""
    verify_manifest(folder)
    state = {"progress": read_progress(folder)}
    if (folder / "optimizer.bin").is_file():
        state["optimizer"] = safe_load(folder / "optimizer.bin")
    state["rng"] = [safe_load(p) for p in sorted(folder.glob("random_states_*.pkl"),
                                                    key=lambda p: int(p.stem.rsplit("_", 1)[1]))]
    return state


def model_file(run_dir: Path, step: int, save_format: str = "pt") -> Path:
    ext = "safetensors" if save_format == "safetensors" else "pt"
    return run_dir / "checkpoints" / MODEL_FILE.format(step=step, ext=ext)


def state_dir(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / STATE_DIR.format(step=step)


def partial_name(path: Path) -> Path:
    """The temporary name a file or folder is written under before it is renamed to ``path``."""
    return path.with_name(f".{path.name}.tmp-partial")


def publish_state_dir(partial: Path, final: Path) -> None:
    """Record the digests of a written state folder, then give it its real name: the checkpoint is complete."""
    write_manifest(partial)
    os.replace(partial, final)


def latest_checkpoint(run_dir: Path) -> tuple[int, Path, Path] | None:
    """(step, model file, trainer-state folder) of the newest complete checkpoint, or None."""
    found = []
    for state in (run_dir / "checkpoints").glob("steps_*_trainer_state"):
        match = _STEP.match(state.name)
        if not match or not state.is_dir():
            continue
        step = int(match.group(1))
        for ext in ("pt", "safetensors"):
            model = state.with_name(MODEL_FILE.format(step=step, ext=ext))
            if model.is_file():
                found.append((step, model, state))
    return max(found) if found else None


def remove_partial_files(run_dir: Path) -> list[Path]:
    """Delete the temporaries (files and state folders) a killed run left behind (never loaded: they never got a
    real name)."""
    partial = [p for d in (run_dir / "checkpoints", run_dir / "final_model", run_dir) if d.is_dir()
               for p in d.glob(".*.tmp-*")]
    for path in partial:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return partial


def truncate_summary(path: Path, step: int) -> None:
    """Keep the ``summary.jsonl`` rows up to ``step`` (a resumed run logs the later steps again)."""
    if path.is_file():
        rows = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
        atomic_write_text("".join(row + "\n" for row in rows), path)
