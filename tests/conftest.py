"""Session fixtures: tiny random Qwen2.5-VL / Qwen3-VL checkpoints built locally (no network)."""

import pytest
import torch
from PIL import Image

from starvla_twinbrain.tiny_vlm import make_tiny_vlm



@pytest.fixture(scope="session", autouse=True)
def _left_hash_cache(tmp_path_factory):
    """The Left reference hashes of a test session go to a fresh cache, not the user's ~/.cache."""
    import os

    from starvla_twinbrain.framework import left_reference

    old = os.environ.get(left_reference.CACHE_ENV)
    os.environ[left_reference.CACHE_ENV] = str(tmp_path_factory.mktemp("twinbrain-cache"))
    yield
    if old is None:
        os.environ.pop(left_reference.CACHE_ENV, None)
    else:
        os.environ[left_reference.CACHE_ENV] = old


FAMILY_DIRS = {"qwen2_5_vl": "tiny-Qwen2.5-VL", "qwen3_vl": "tiny-Qwen3-VL"}


@pytest.fixture(scope="session", params=sorted(FAMILY_DIRS))
def tiny_vlm(request, tmp_path_factory) -> str:
    """Path of a tiny checkpoint; the folder name carries the family as starVLA expects."""
    family = request.param
    out = tmp_path_factory.mktemp("vlm") / FAMILY_DIRS[family]
    make_tiny_vlm(out, family=family, seed=0)
    return str(out)


def random_image(seed: int, size: int = 56) -> Image.Image:
    g = torch.Generator().manual_seed(seed)
    return Image.fromarray(torch.randint(0, 256, (size, size, 3), generator=g, dtype=torch.uint8).numpy())
