"""The Left Brain in checkpoints: stored by reference (base path + content hash), verified on load.

The Left Brain is frozen, so it is by definition the base checkpoint. A run's checkpoint keeps only what was
trained. In place of the Left's weights it holds one small ``left_brain_reference`` entry: a uint8 tensor with
JSON ``{"base_vlm": ..., "sha256": ...}``, so the file stays a plain state_dict (torch or safetensors). The hash
covers the base checkpoint's weight and config files, so it does not depend on the dtype or device of a run.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

import torch

REFERENCE_KEY = "left_brain_reference"
LEFT_PREFIX = "left_brain."


def _checkpoint_folder(base_vlm: str) -> Path:
    path = Path(base_vlm).expanduser()
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download  # a hub id already in the local cache; never downloads

    return Path(snapshot_download(base_vlm, local_files_only=True))


@lru_cache(maxsize=8)
def base_checkpoint_hash(base_vlm: str) -> str:
    """sha256 over the base checkpoint's ``config.json`` and weight files, in name order."""
    folder = _checkpoint_folder(base_vlm)
    files = sorted(p for p in folder.iterdir() if p.name == "config.json" or p.suffix in (".safetensors", ".bin"))
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
