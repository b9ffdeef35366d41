"""2 processes (gloo on CPU, through torchrun). Exact resume: a run interrupted after its step-3 checkpoint and
resumed ends where the uninterrupted 2-process run ends: losses, weights, optimizer state and each process's RNG
state (accelerate's save_state / load_state). Data parallelism: 2 processes × batch 4 train as 1 process × batch 8
on the same samples (losses and weights), once the flow-matching noise is a function of each sample."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from starvla_twinbrain.host.api import STARVLA_AVAILABLE
from starvla_twinbrain.runtime import checkpoint as ckpt

pytestmark = pytest.mark.skipif(STARVLA_AVAILABLE, reason="embedded runtime tests")
ROOT = Path(__file__).parents[2]
STEPS = dict(max_train_steps=6, save_interval=3, num_warmup_steps=1)
SAMPLES, BATCH = 16, 4  # per process: 2 batches an epoch, so the run crosses epochs


def launch(vlm: str, root: Path, run_id: str, resume: bool, stop: int = 0, processes: int = 2, batch: int = BATCH,
           noise_per_sample: bool = False, low_memory: bool = False) -> subprocess.CompletedProcess:
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)] if processes > 1 else []
    command = [sys.executable, *launcher, "-m", "tests.runtime.test_distributed", vlm, str(root), run_id,
               str(int(resume)), str(stop), str(batch), str(int(noise_per_sample))]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
           "TEST_LOW_MEMORY": str(int(low_memory))}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def noise_from_each_sample(head_class) -> None:
    """The head's noise and time drawn from each sample's own action values instead of the process's RNG, so a
    sample gets the same draw whichever process and batch it lands in (the 1- vs 2-process comparison)."""
    forward = head_class.forward

    def seeded(self, condition, actions, *args, **kwargs):
        noise, t = [], []
        for sample in actions.detach().float().cpu():
            digest = hashlib.sha256(sample.numpy().tobytes()).digest()  # not hash(): salted per process
            g = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") % 2**63)
            noise.append(torch.randn(sample.shape, generator=g))
            t.append(torch.rand((), generator=g))
        return forward(self, condition, actions, *args, noise=torch.stack(noise), t=torch.stack(t), **kwargs)

    head_class.forward = seeded


@pytest.fixture(scope="module")
def vlm(qwen25):
    return qwen25


@pytest.mark.slow
def test_two_process_run_resumes_exactly(vlm, tmp_path):
    straight = launch(vlm, tmp_path, "straight", resume=False)
    assert straight.returncode == 0, straight.stderr[-3000:]
    # Each process dies fetching its 5th batch (accelerate reads one ahead: during step 4), after the step-3 save.
    killed = launch(vlm, tmp_path, "resumed", resume=False, stop=4 * BATCH)
    assert killed.returncode != 0 and "Interrupt" in killed.stderr
    assert ckpt.latest_checkpoint(tmp_path / "resumed")[0] == 3
    resumed = launch(vlm, tmp_path, "resumed", resume=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    want = ckpt.load_trainer_state(ckpt.state_dir(tmp_path / "straight", 6))
    got = ckpt.load_trainer_state(ckpt.state_dir(tmp_path / "resumed", 6))
    assert got["progress"]["num_processes"] == 2 and len(got["rng"]) == 2
    np.testing.assert_allclose(got["progress"]["losses"], want["progress"]["losses"], rtol=1e-6, atol=1e-7)
    assert got["progress"]["scheduler"] == want["progress"]["scheduler"]
    for rank in range(2):  # every process continued its own RNG streams
        for key in ("torch_manual_seed", "numpy_random_seed", "random_state"):
            assert str(got["rng"][rank][key]) == str(want["rng"][rank][key]), (rank, key)
    assert not torch.equal(got["rng"][0]["torch_manual_seed"], got["rng"][1]["torch_manual_seed"])  # seed + rank
    for index, a in got["optimizer"]["state"].items():
        for name in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(a[name], want["optimizer"]["state"][index][name], rtol=1e-5, atol=1e-8)
    a = ckpt.load_state_dict(tmp_path / "straight" / "final_model" / "pytorch_model.pt")
    b = ckpt.load_state_dict(tmp_path / "resumed" / "final_model" / "pytorch_model.pt")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-6, atol=1e-7, msg=key)


@pytest.mark.slow
def test_two_processes_train_as_one_process_with_the_global_batch(vlm, tmp_path):
    # Accelerate deals the loader's batches of 4 to the processes in turn, so step k of the 2-process run sees
    # batches 2k and 2k+1 of the shared permutation: the samples of batch k of a 1-process run with batch 8.
    two = launch(vlm, tmp_path, "two", resume=False, noise_per_sample=True)
    assert two.returncode == 0, two.stderr[-3000:]
    one = launch(vlm, tmp_path, "one", resume=False, processes=1, batch=2 * BATCH, noise_per_sample=True)
    assert one.returncode == 0, one.stderr[-3000:]
    want = ckpt.load_trainer_state(ckpt.state_dir(tmp_path / "one", 6))["progress"]["losses"]
    got = ckpt.load_trainer_state(ckpt.state_dir(tmp_path / "two", 6))["progress"]["losses"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)  # the mean over processes = the mean over 8
    a = ckpt.load_state_dict(tmp_path / "one" / "final_model" / "pytorch_model.pt")
    b = ckpt.load_state_dict(tmp_path / "two" / "final_model" / "pytorch_model.pt")
    assert a.keys() == b.keys()
    # Key biases shift every score of a query by the same amount, which softmax ignores: their exact gradient is 0,
    # and AdamW turns the rounding noise left in it into full-size steps of either sign. Every other weight compared.
    compared = [key for key in a if not key.endswith(("to_k.bias", "k_proj.bias"))]
    assert len(compared) > 0.9 * len(a)
    for key in compared:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-6, msg=key)
    assert len(set(np.round(want, 6))) == len(want)  # every step's loss differs: the runs trained, not stood still


@pytest.mark.slow
def test_two_process_lora_int8_run_trains(vlm, tmp_path):
    """DDP (gloo) with LoRA and the int8 Left: DDP broadcasts parameters and buffers at start, which torchao's int8
    tensors do not support; the framework lists them in _ddp_params_and_buffers_to_ignore (same on every rank)."""
    pytest.importorskip("peft"), pytest.importorskip("torchao")
    run = launch(vlm, tmp_path, "lowmem", resume=False, low_memory=True)
    assert run.returncode == 0, run.stderr[-3000:]
    state = ckpt.load_state_dict(tmp_path / "lowmem" / "final_model" / "pytorch_model.pt")
    assert any(".lora_B." in k for k in state) and not any(k.startswith("left_brain.") for k in state)
    assert all(v.abs().sum() > 0 for k, v in state.items() if ".lora_B." in k)


if __name__ == "__main__":  # one process of the torchrun launch
    from starvla_twinbrain.runtime.trainer import train
    from tests.factories import InterruptAt, learnable_examples, make_cfg

    vlm_path, root, run_id, resume, stop = sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4] == "1", int(sys.argv[5])
    batch, noise_per_sample = int(sys.argv[6]), sys.argv[7] == "1"
    torch.set_num_threads(1)
    if noise_per_sample:
        from starvla_twinbrain.model.action_head import FlowMatchingActionHead

        noise_from_each_sample(FlowMatchingActionHead)
    data = learnable_examples(SAMPLES)
    cfg = make_cfg(vlm_path, root, run_id, is_resume=resume, **STEPS)
    cfg.datasets.vla_data.per_device_batch_size = batch
    if os.environ.get("TEST_LOW_MEMORY") == "1":
        cfg.framework.twinbrain.right_lora = {"r": 4, "alpha": 8}
        cfg.framework.twinbrain.left_precision = "int8"
    train(cfg, InterruptAt(data, stop) if stop else data)
