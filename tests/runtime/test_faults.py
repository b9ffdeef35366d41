"""Faults in training: a run killed with SIGKILL (also in the middle of a checkpoint write) resumes from its last
complete checkpoint and ends where an uninterrupted run ends; damaged checkpoints are refused, naming the file;
training on CPU is reproducible step for step."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from starvla_twinbrain.host.api import STARVLA_AVAILABLE
from starvla_twinbrain.runtime import checkpoint as ckpt
from starvla_twinbrain.runtime.trainer import train
from tests.factories import learnable_examples, make_cfg

pytestmark = pytest.mark.skipif(STARVLA_AVAILABLE, reason="embedded runtime tests")
ROOT = Path(__file__).parents[2]
STEPS = dict(max_train_steps=8, save_interval=2, num_warmup_steps=1)


def run_training(vlm: str, root: Path, run_id: str, resume: bool = False):
    return train(make_cfg(vlm, root, run_id, is_resume=resume, **STEPS), learnable_examples(12))


@pytest.fixture(scope="module")
def vlm(qwen25):
    return qwen25


@pytest.fixture(scope="module")
def reference(vlm, tmp_path_factory):
    root = tmp_path_factory.mktemp("reference")
    result = run_training(vlm, root, "straight")
    return result, ckpt.load_state_dict(result.run_dir / "final_model" / "pytorch_model.pt")


def start_worker(vlm: str, root: Path, run_id: str, slow_rename: float = 0.0) -> subprocess.Popen:
    args = [sys.executable, "-m", "tests.runtime.test_faults", vlm, str(root), run_id, str(slow_rename)]
    return subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def kill_when(proc: subprocess.Popen, condition, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"worker ended before the kill point: {proc.stderr.read().decode()[-2000:]}"
        assert time.monotonic() < deadline, "kill point never reached"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def assert_same_run(resumed, reference) -> None:
    result, weights = reference
    assert resumed.step == result.step
    np.testing.assert_allclose(resumed.losses, result.losses, rtol=1e-6, atol=1e-7)
    got = ckpt.load_state_dict(resumed.run_dir / "final_model" / "pytorch_model.pt")
    assert got.keys() == weights.keys()
    for key in weights:
        torch.testing.assert_close(got[key], weights[key], rtol=1e-6, atol=1e-7, msg=key)
    # optimizer, scheduler, step, RNG: the same too
    got_state = ckpt.load_trainer_state(ckpt.state_dir(resumed.run_dir, result.step))
    want_state = ckpt.load_trainer_state(ckpt.state_dir(result.run_dir, result.step))
    got, want = got_state["progress"], want_state["progress"]
    assert got["step"] == want["step"] and got["scheduler"] == want["scheduler"]
    np.testing.assert_allclose(got["losses"], want["losses"], rtol=1e-6, atol=1e-7)
    for index, a in got_state["optimizer"]["state"].items():
        b = want_state["optimizer"]["state"][index]
        for name in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-8)
    assert len(got_state["rng"]) == 1  # one file per process
    assert torch.equal(got_state["rng"][0]["torch_manual_seed"], want_state["rng"][0]["torch_manual_seed"])
    steps = [json.loads(line)["step"] for line in (resumed.run_dir / "summary.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)), "summary.jsonl repeats steps after the resume"


@pytest.mark.slow
def test_sigkill_during_a_checkpoint_write_resumes_exactly(vlm, reference, tmp_path):
    checkpoints = tmp_path / "killed" / "checkpoints"
    proc = start_worker(vlm, tmp_path, "killed", slow_rename=2.0)
    # Killed while the step-4 files sit under their temporary names, written but not yet renamed.
    kill_when(proc, lambda: checkpoints.is_dir() and any(".tmp-" in p.name and "steps_4_" in p.name
                                                          for p in checkpoints.iterdir()))
    assert ckpt.latest_checkpoint(tmp_path / "killed")[0] == 2
    assert not ckpt.state_dir(tmp_path / "killed", 4).exists()
    resumed = run_training(vlm, tmp_path, "killed", resume=True)
    assert not list(checkpoints.glob(".*.tmp-*")), "partial files were left behind"
    assert_same_run(resumed, reference)


@pytest.mark.slow
def test_sigkill_at_random_points_resumes_exactly(vlm, reference, tmp_path):
    rng = random.Random(0)
    run_dir = tmp_path / "random"
    for attempt in range(2):  # killed twice, at random moments after the first complete checkpoint
        proc = start_worker(vlm, tmp_path, "random")
        start = None

        def due():
            nonlocal start
            if start is None and ckpt.latest_checkpoint(run_dir) is not None:
                start, delay[0] = time.monotonic(), rng.uniform(0.0, 1.5)
            return start is not None and time.monotonic() - start > delay[0]

        delay = [0.0]
        kill_when(proc, due)
    resumed = run_training(vlm, tmp_path, "random", resume=True)
    assert_same_run(resumed, reference)


def test_modified_checkpoint_is_refused_naming_the_file(reference, tmp_path):
    result, _ = reference
    source = result.run_dir / "checkpoints" / "steps_8_pytorch_model.pt"
    damaged = tmp_path / source.name
    data = bytearray(source.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the middle of the tensor data
    damaged.write_bytes(bytes(data))
    (tmp_path / (source.name + ".sha256")).write_text((source.parent / (source.name + ".sha256")).read_text())
    with pytest.raises(ValueError, match=r"steps_8_pytorch_model\.pt fails its SHA-256 check"):
        ckpt.load_state_dict(damaged)


def copy_state(result, tmp_path) -> Path:
    source = ckpt.state_dir(result.run_dir, result.step)
    copy = tmp_path / source.name
    shutil.copytree(source, copy)
    return copy


def test_damaged_trainer_state_is_refused_naming_the_file(reference, tmp_path):
    state = copy_state(reference[0], tmp_path)
    optimizer = state / "optimizer.bin"
    optimizer.write_bytes(optimizer.read_bytes()[:500])
    with pytest.raises(ValueError, match=r"optimizer\.bin fails its SHA-256 check"):
        ckpt.load_trainer_state(state)
    ckpt.write_manifest(state)  # digests recomputed: the truncated file itself is refused
    with pytest.raises(ValueError, match=r"trainer state .*optimizer\.bin cannot be read"):
        ckpt.load_trainer_state(state)


class RunsCode:
    """Unpickling this calls a function: what a trainer state from an untrusted run could carry."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


@pytest.mark.parametrize("name", ["random_states_0.pkl", "optimizer.bin"])
def test_trainer_state_with_a_pickled_callable_is_refused(vlm, reference, tmp_path, name):
    run = tmp_path / "untrusted"
    shutil.copytree(reference[0].run_dir, run)
    state = ckpt.state_dir(run, reference[0].step)
    marker = tmp_path / "code-ran"
    content = torch.load(state / name, weights_only=False)  # the test's own file
    content["payload"] = RunsCode(marker)
    torch.save(content, state / name)
    ckpt.write_manifest(state)  # digests match: only weights_only=True stands between the file and the code
    with pytest.raises(ValueError, match=r"trainer state .*steps_8_trainer_state.* cannot be read.*[Ww]eights.only"):
        run_training(vlm, tmp_path, "untrusted", resume=True)
    assert not marker.exists(), "unpickling the trainer state ran code"


@pytest.mark.slow  # an end-to-end run: the full suite has it, the fast tier stays under 3 minutes
def test_training_is_reproducible_step_for_step(vlm, reference, tmp_path):
    again = run_training(vlm, tmp_path, "again")
    result, weights = reference
    assert again.losses == result.losses  # bit for bit, every step
    got = ckpt.load_state_dict(again.run_dir / "final_model" / "pytorch_model.pt")
    for key in weights:
        assert torch.equal(got[key], weights[key]), key


if __name__ == "__main__":  # the worker the kill tests start: one training run, renames slowed down on request
    vlm_path, root, run_id, slow = sys.argv[1], Path(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    if slow:
        real_replace = os.replace

        def slow_replace(src, dst):
            if ".tmp-" in str(src) and "checkpoints" in str(dst):
                time.sleep(slow)
            real_replace(src, dst)

        ckpt.os.replace = slow_replace  # the checkpoint module's view of os
    run_training(vlm_path, root, run_id, resume=True)
