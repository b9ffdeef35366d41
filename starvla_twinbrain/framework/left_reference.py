"""The Left Brain in checkpoints: stored by reference (base path + content hash), verified on load.

The Left Brain is frozen, so it is by definition the base checkpoint. A run's checkpoint keeps only what was
trained. In place of the Left's weights it holds one small ``left_brain_reference`` entry: a uint8 tensor with
JSON ``{"base_vlm": ..., "sha256": ...}``, so the file stays a plain state_dict (torch or safetensors). The hash
covers the base checkpoint's weight and config files, so it does not depend on the dtype or device of a run.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
from functools import lru_cache
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

REFERENCE_KEY = "left_brain_reference"
LEFT_PREFIX = "left_brain."


def _checkpoint_folder(base_vlm: str) -> Path:
    path = Path(base_vlm).expanduser()
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download  # a hub id already in the local cache; never downloads

    return Path(snapshot_download(base_vlm, local_files_only=True))


CACHE_ENV = "STARVLA_TWINBRAIN_CACHE"


def cache_dir() -> Path:
    """``$STARVLA_TWINBRAIN_CACHE``, else ``$XDG_CACHE_HOME/starvla_twinbrain`` (``~/.cache/starvla_twinbrain``)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "starvla_twinbrain"


def _hashed_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name == "config.json" or p.suffix in (".safetensors", ".bin"))


def base_checkpoint_hash(base_vlm: str) -> str:
    """sha256 over the base checkpoint's ``config.json`` and weight files, in name order.

    Reading every weight byte takes minutes at 4B, so the result is kept in :func:`cache_dir`, keyed by the
    folder and each file's name, size and modification time: a machine computes it once per checkpoint (the
    first process to ask holds a lock while the others wait), and a changed file changes the key."""
    folder = _checkpoint_folder(base_vlm).resolve()
    files = _hashed_files(folder)
    stats = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    key = hashlib.sha256(json.dumps([str(folder), stats]).encode()).hexdigest()
    return _cached_hash(key, folder, tuple(files))


@lru_cache(maxsize=8)
def _cached_hash(key: str, folder: Path, files: tuple[Path, ...]) -> str:
    cache = cache_dir() / "left_reference"
    entry = cache / f"{key}.json"
    try:
        cache.mkdir(parents=True, exist_ok=True)
        lock = open(cache / f"{key}.lock", "w")
    except OSError as err:  # a read-only home: hash without the cache
        logger.warning("left reference cache %s unusable (%s); hashing %s", cache, err, folder)
        return _hash_files(files)
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if entry.is_file():
            return json.loads(entry.read_text())["sha256"]
        logger.info("hashing the base checkpoint %s once for this machine (cached in %s)", folder, cache)
        digest = _hash_files(files)
        tmp = entry.with_name(f".{entry.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps({"folder": str(folder), "files": [f.name for f in files], "sha256": digest}))
        os.replace(tmp, entry)
        return digest


def _hash_files(files) -> str:
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode())
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                digest.update(block)
    return digest.hexdigest()


def encode_reference(base_vlm: str, sha256: str) -> torch.Tensor:
    payload = json.dumps({"base_vlm": base_vlm, "sha256": sha256}).encode()
    return torch.frombuffer(bytearray(payload), dtype=torch.uint8).clone()


def decode_reference(tensor: torch.Tensor) -> dict:
    return json.loads(bytes(tensor.cpu().to(torch.uint8).tolist()).decode())


def check_reference(reference: dict, base_vlm: str, sha256: str) -> None:
    if reference.get("sha256") != sha256:
        raise ValueError(
            f"left_brain_reference: this checkpoint was trained with the Left Brain {reference.get('base_vlm')!r} "
            f"(sha256 {str(reference.get('sha256'))[:12]}…), but framework.qwenvl.base_vlm={base_vlm!r} has sha256 "
            f"{sha256[:12]}…: point framework.qwenvl.base_vlm at the same base checkpoint"
        )
