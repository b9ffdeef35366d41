"""Session fixtures: tiny random Qwen2.5-VL / Qwen3-VL checkpoints built locally (no network)."""

import pytest
import torch
from PIL import Image

from starvla_twinbrain.tiny_vlm import make_tiny_vlm

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
