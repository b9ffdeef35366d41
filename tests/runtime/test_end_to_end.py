"""End to end as a user runs it: `starvla make-dataset` (LeRobot v3.0 via lerobot) → `starvla train` (CLI, one
process and two gloo processes) → the run directory → `load_framework` → predict_action."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from starvla_twinbrain.host.api import STARVLA_AVAILABLE

pytest.importorskip("lerobot")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(STARVLA_AVAILABLE, reason="embedded-mode CLI")]

ROOT = Path(__file__).parents[2]
CLI = [sys.executable, "-m", "starvla_twinbrain.cli"]


def run(args, cwd, timeout=900):
    env = {**os.environ, "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, args))}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    work = tmp_path_factory.mktemp("e2e")
    run([*CLI, "make-tiny-vlm", "runs/models/tiny-Qwen2.5-VL"], work)
    run([*CLI, "make-dataset", "runs/data/synthetic", "--episodes", "8", "--length", "20"], work)
    # Held-out episodes: the same generator under another seed (other targets and start positions).
    run([*CLI, "make-dataset", "runs/heldout/synthetic", "--episodes", "6", "--length", "20", "--seed", "1"], work)
    return work


def overrides(run_id, **extra):
    base = {"run_id": run_id, "framework.qwenvl.base_vlm": "runs/models/tiny-Qwen2.5-VL", "datasets.vla_data.data_root_dir": "runs/data"}
    return [f"{k}={v}" for k, v in {**base, **extra}.items()]


def losses(run_dir: Path) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "summary.jsonl").read_text().splitlines()]
    return [r["action_loss"] for r in rows if "action_loss" in r]


def test_cli_trains_on_a_lerobot_dataset(workdir, monkeypatch):
    out = run([*CLI, "train", "--framework", "twinbrain", "--config", str(ROOT / "configs/tiny_cpu.yaml"),
               *overrides("cli", **{"trainer.max_train_steps": 80, "trainer.save_interval": 40})], workdir)
    assert "embedded mode" in out
    run_dir = workdir / "runs" / "cli"
    curve = losses(run_dir)
    assert np.mean(curve[-2:]) < 0.5 * curve[0], curve
    stats = json.loads((run_dir / "dataset_statistics.json").read_text())
    norm = next(iter(stats.values()))
    assert {"action", "state"} <= set(norm) and len(norm["action"]["q01"]) == 7

    from starvla_twinbrain.framework.pretrained import load_framework
    from starvla_twinbrain.runtime.trainer import dataset_from_config

    monkeypatch.chdir(workdir)  # config.yaml keeps base_vlm as given (relative to where training ran), as starVLA
    model = load_framework(run_dir / "final_model" / "pytorch_model.pt").eval()
    assert model.norm_stats == stats
    from omegaconf import OmegaConf

    from starvla_twinbrain.host.api import FRAMEWORK_REGISTRY
    from starvla_twinbrain.runtime.data import LeRobotVLADataset

    cfg = OmegaConf.load(run_dir / "config.yaml")
    dataset, _ = dataset_from_config(cfg)
    batch = [dataset[i] for i in range(0, 64, 8)]
    torch.manual_seed(0)
    pred = model.predict_action(batch)["normalized_actions"]
    truth = np.stack([np.asarray(ex["action"], dtype=np.float32) for ex in batch])
    assert pred.dtype == np.float32 and pred.shape == truth.shape
    # Trained, the policy is much closer to the data than the zero (= mid-range) prediction.
    assert np.abs(pred - truth).mean() < 0.6 * np.abs(truth).mean(), (np.abs(pred - truth).mean(), np.abs(truth).mean())

    # Episodes it never saw, normalised with the training statistics (inputs and targets), as the server does.
    heldout = LeRobotVLADataset(workdir / "runs/heldout/synthetic", action_horizon=truth.shape[1], include_state=True,
                                image_size=dataset.image_size, unnorm_key=dataset.unnorm_key)
    heldout.statistics = stats
    batch = [heldout[i] for i in range(0, len(heldout), 3)]
    truth = np.stack([np.asarray(ex["action"], dtype=np.float32) for ex in batch])
    with torch.no_grad():
        policy = np.abs(model.predict_action(batch, seed=0)["normalized_actions"] - truth).mean()
        torch.manual_seed(int(cfg.seed))  # the weights training started from
        untrained_model = FRAMEWORK_REGISTRY[cfg.framework.name](cfg).eval()
        untrained = np.abs(untrained_model.predict_action(batch, seed=0)["normalized_actions"] - truth).mean()
    mean_chunk = np.mean([np.asarray(dataset[i]["action"], dtype=np.float32) for i in range(len(dataset))], 0)
    mean = np.abs(mean_chunk - truth).mean()
    errors = {"policy": policy, "untrained": untrained, "zero": np.abs(truth).mean(), "training mean chunk": mean}
    # Measured: policy 0.237, untrained 1.04, zero 0.82, training mean chunk 0.209 (held-out seed 100 by hand: 0.24,
    # 1.07, 0.82, 0.21). It generalises well past the untrained model and the zero action, but NOT
    # past the mean chunk: 80 steps of this tiny head do not learn the target from the image (nor did 120-160 steps
    # with per-colour fixed targets, a constant or higher head learning rate), so that is not asserted.
    assert policy < 0.6 * errors["zero"] and policy < 0.5 * untrained, errors


def test_two_process_gloo_run_trains(workdir):
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "starvla_twinbrain.cli", "train",
              "--config", str(ROOT / "configs/tiny_cpu.yaml"),
              *overrides("ddp", **{"trainer.max_train_steps": 6, "trainer.save_interval": 6,
                                   "datasets.vla_data.per_device_batch_size": 2})]
    run(launch, workdir)
    run_dir = workdir / "runs" / "ddp"
    assert len(losses(run_dir)) >= 1 and all(np.isfinite(losses(run_dir)))
    from starvla_twinbrain.runtime.checkpoint import load_state_dict

    state = load_state_dict(run_dir / "checkpoints" / "steps_6_pytorch_model.pt")
    assert not any(k.startswith("left_brain.") for k in state)  # Left by reference
    from starvla_twinbrain.model.qwen_compat import load_vlm

    stock = load_vlm(str(workdir / "runs/models/tiny-Qwen2.5-VL"), "qwen2_5_vl", "sdpa")
    embed = stock.get_input_embeddings().weight
    trained = next(v for k, v in state.items() if k.startswith("right_brain.") and k.endswith("embed_tokens.weight"))
    assert not torch.equal(trained.float(), embed.float())  # the Right Brain moved
