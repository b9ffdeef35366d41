"""robosuite Lift through the policy server: the simulator runs in its own environment (.venv-sim, made by
scripts/setup_sim.sh; scripts/test.sh creates it) and talks to a live server, as in the benchmark."""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from starvla_twinbrain.host.api import STARVLA_AVAILABLE
from starvla_twinbrain.runtime.trainer import train
from starvla_twinbrain.serving.policy import ServedPolicy
from starvla_twinbrain.serving.server import PolicyServer
from tests.factories import make_cfg

ROOT = Path(__file__).parents[2]
SIM_PYTHON = ROOT / ".venv-sim" / "bin" / "python"
STATE_DIM, ACTION_DIM, HORIZON = 11, 7, 8

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(STARVLA_AVAILABLE, reason="embedded runtime run"),
    pytest.mark.skipif(not SIM_PYTHON.is_file(), reason="no .venv-sim (bash scripts/setup_sim.sh)"),
]


def sim(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    return subprocess.run([str(SIM_PYTHON), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def lift_examples(n: int) -> list[dict]:
    from PIL import Image

    g = np.random.default_rng(0)
    return [{"image": [Image.new("RGB", (64, 64), (200, 30, 30))], "lang": "lift the red cube",
             "state": g.normal(size=(1, STATE_DIM)).astype(np.float16),
             "action": g.uniform(-1, 1, (HORIZON, ACTION_DIM)).astype(np.float16)} for _ in range(n)]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A (barely trained) Lift-shaped policy, served on a free port; its statistics are not the identity."""
    from starvla_twinbrain.tiny_vlm import make_tiny_vlm

    root = tmp_path_factory.mktemp("lift")
    vlm = str(make_tiny_vlm(root / "tiny-Qwen2.5-VL", family="qwen2_5_vl"))
    cfg = make_cfg(vlm, root, "lift", max_train_steps=1, save_interval=100)
    cfg.framework.action_model.update(state_dim=STATE_DIM, action_dim=ACTION_DIM, action_horizon=HORIZON)
    span = lambda d, lo, hi: {"q01": [lo] * d, "q99": [hi] * d, "min": [lo] * d, "max": [hi] * d, "mask": [True] * d}  # noqa: E731
    stats = {"robosuite_lift": {"action": span(ACTION_DIM, -0.5, 0.5), "state": span(STATE_DIM, -1.0, 1.0)}}
    run = train(cfg, lift_examples(4), stats).run_dir
    server = PolicyServer(ServedPolicy.from_checkpoint(run / "final_model" / "pytorch_model.pt", device="cpu"),
                          host="127.0.0.1", port=0)
    with server.running() as port:
        yield server, port


def test_expert_demonstration_lifts_the_cube(tmp_path):
    out = sim("eval/robosuite/collect.py", str(tmp_path), "--episodes", "1")
    assert out.returncode == 0, out.stderr[-3000:]
    with np.load(tmp_path / "episode_0000.npz") as ep:
        assert bool(ep["success"])
        steps = len(ep["action"])
        assert ep["image"].shape == (steps, 64, 64, 3) and ep["image"].dtype == np.uint8
        assert ep["state"].shape == (steps, STATE_DIM) and ep["action"].shape == (steps, ACTION_DIM)
        # state = eef (3), gripper qpos (2), cube (3), cube - eef (3)
        np.testing.assert_allclose(ep["state"][:, 8:], ep["state"][:, 5:8] - ep["state"][:, :3], atol=1e-6)
        assert ep["state"][-1, 7] > ep["state"][0, 7] + 0.04  # the cube ended higher than it started


def test_closed_loop_episode_through_the_server(served, tmp_path):
    server, port = served
    before = server.requests_served
    out = sim("eval/robosuite/evaluate.py", "--port", str(port), "--episodes", "1", "--horizon", "12",
              "--replan", "4", "--out", str(tmp_path), "--videos", "1")
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    episode = results["per_episode"][0]
    assert results["episodes"] == 1 and results["replan"] == 4
    assert results["evaluation_seeds"] == [1000]  # the default --seed; the Wilson interval of 0/1 or 1/1:
    assert results["wilson_95"] == ([0.0, 0.7935] if results["successes"] == 0 else [0.2065, 1.0])
    assert episode["steps"] == 12 and episode["queries"] == 3  # 4 actions per chunk, 12-step horizon
    assert server.requests_served - before == 3
    assert (tmp_path / "videos" / "episode_0000.mp4").stat().st_size > 0
    assert "success rate: " in out.stdout


def test_client_imports_without_torch():
    """The simulator's environment has no torch: the client must not need it."""
    out = sim("-c", "import sys, starvla_twinbrain.serving.client; sys.exit('torch' in sys.modules)")
    assert out.returncode == 0, out.stderr[-2000:]
