"""Session fixtures, built locally (no network): tiny random Qwen2.5-VL / Qwen3-VL checkpoints and a tiny trained
run. The plain builders they use (examples, configs, images) are in ``tests/factories.py``."""

import pytest

from starvla_twinbrain.tiny_vlm import make_tiny_vlm
from tests.factories import learnable_examples, make_cfg, serving_statistics


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


@pytest.fixture(scope="module")
def stock(tiny_vlm):
    """``tiny_vlm`` loaded as the unpatched transformers model (sdpa), the reference the brains are compared with."""
    from starvla_twinbrain.model.processing import family_of
    from starvla_twinbrain.model.qwen_compat import load_vlm

    return load_vlm(tiny_vlm, family_of(tiny_vlm), "sdpa").eval()


@pytest.fixture(scope="session")
def qwen25(tmp_path_factory) -> str:
    """One tiny Qwen2.5-VL (seed 0) for the tests that need a single family; read-only, shared by the session."""
    return str(make_tiny_vlm(tmp_path_factory.mktemp("vlm") / FAMILY_DIRS["qwen2_5_vl"], family="qwen2_5_vl", seed=0))


@pytest.fixture(scope="session")
def trained_run(qwen25, tmp_path_factory):
    """``final_model/pytorch_model.pt`` of a 2-step embedded run on ``learnable_examples(8)``, with statistics in
    which un-normalising is not the identity (``serving_statistics``)."""
    from starvla_twinbrain.runtime.trainer import train

    data = learnable_examples(8)
    cfg = make_cfg(qwen25, tmp_path_factory.mktemp("run"), "served", max_train_steps=2, save_interval=100)
    return train(cfg, data, serving_statistics(data)).run_dir / "final_model" / "pytorch_model.pt"
