"""The precision policy, gradient accumulation and the other config keys the embedded trainer honours, with a
deterministic probe framework (a linear policy: no dropout, no sampled noise, so runs compare number for number).
The policy applied to TwinBrain itself (a bf16 Left meeting an fp32 Right) is in tests/framework."""

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import GradientAccumulationPlugin
from omegaconf import OmegaConf
from torch import nn

from starvla_twinbrain.host.api import FRAMEWORK_REGISTRY, STARVLA_AVAILABLE
from starvla_twinbrain.runtime import checkpoint as ckpt
from starvla_twinbrain.runtime.trainer import train

pytestmark = pytest.mark.skipif(STARVLA_AVAILABLE, reason="embedded runtime tests")

FEATURES, DIM = 16, 7
PROBE = "PrecisionProbe"


class LinearProbe(nn.Module):
    """``action = W x + b``, its weights read in ``weight_dtype`` (as a bf16 checkpoint is read on a GPU machine);
    records the gradient that reaches the optimizer at every step."""

    weight_dtype = torch.float32
    built: list["LinearProbe"] = []

    def __init__(self, config, **kwargs):
        super().__init__()
        LinearProbe.built.append(self)
        g = torch.Generator().manual_seed(0)
        self.action_model = nn.Linear(FEATURES, DIM).to(self.weight_dtype)
        with torch.no_grad():
            for p in self.action_model.parameters():
                p.copy_(torch.rand(p.shape, generator=g) - 0.5)
        self.seen_grads: list[torch.Tensor] = []
        self.action_model.weight.register_post_accumulate_grad_hook(lambda p: self.seen_grads.append(p.grad.clone()))

    def forward(self, examples, **kwargs):
        x = torch.tensor(np.stack([ex["x"] for ex in examples]))
        y = torch.tensor(np.stack([ex["action"] for ex in examples]))
        dtype = self.action_model.weight.dtype
        return {"action_loss": torch.nn.functional.mse_loss(self.action_model(x.to(dtype)).float(), y)}

    def predict_action(self, examples, **kwargs):
        return {"normalized_actions": np.zeros((len(examples), DIM), np.float32)}


FRAMEWORK_REGISTRY.register(PROBE)(LinearProbe)


def probe_data(n: int) -> list[dict]:
    g = np.random.default_rng(0)
    mix = g.standard_normal((DIM, FEATURES)).astype(np.float32)
    xs = g.standard_normal((n, FEATURES)).astype(np.float32)
    return [{"x": x, "action": mix @ x} for x in xs]


def probe_cfg(root, run_id: str, batch: int, **trainer):
    return OmegaConf.create({
        "run_root_dir": str(root), "run_id": run_id, "seed": 0, "framework": {"name": PROBE},
        "datasets": {"vla_data": {"per_device_batch_size": batch}},
        "trainer": {"max_train_steps": 20, "save_interval": 1000, "logging_frequency": 1, "num_warmup_steps": 0,
                    "learning_rate": {"base": 1e-5}, "lr_scheduler_type": "constant",
                    "optimizer": {"name": "AdamW", "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 0.0},
                    **trainer},
    })


@pytest.fixture
def fresh_accelerate():
    """Each test builds its own Accelerator (mixed precision, accumulation); accelerate keeps both process-wide."""
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def final_weight(result) -> torch.Tensor:
    return ckpt.load_state_dict(result.run_dir / "final_model" / "pytorch_model.pt")["action_model.weight"]


def test_bf16_autocast_follows_fp32_while_bf16_weights_do_not_move(tmp_path, fresh_accelerate, monkeypatch):
    """20 AdamW steps at lr 1e-5. fp32 reference; bf16 autocast over the policy's fp32 weights (the model read in
    bf16, as on a GPU machine) follows it to 2% of the update; AdamW on the bf16 weights themselves (what the
    trainer did before the policy) leaves them where they started, but for the few within ~5e-3 of zero."""
    start = LinearProbe(None).action_model.weight.detach().float()
    reference = final_weight(train(probe_cfg(tmp_path, "fp32", 8), probe_data(64), accelerator=Accelerator(cpu=True)))
    AcceleratorState._reset_state(True)
    monkeypatch.setattr(LinearProbe, "weight_dtype", torch.bfloat16)
    bf16_start = LinearProbe(None).action_model.weight.detach().float()
    mixed = final_weight(train(probe_cfg(tmp_path, "bf16-autocast", 8), probe_data(64),
                               accelerator=Accelerator(cpu=True, mixed_precision="bf16")))

    assert mixed.dtype == torch.float32  # the trainable weights were trained (and saved) in fp32
    want, got = reference - start, mixed - bf16_start
    assert want.abs().mean() > 1e-4  # the fp32 run moved by ~20 steps x lr
    difference = float((got - want).norm() / want.norm())
    assert difference < 0.02, difference

    bf16 = LinearProbe(None)  # the failure the policy prevents: AdamW on bf16 weights
    before = bf16.action_model.weight.detach().clone()
    optimizer = torch.optim.AdamW(bf16.parameters(), lr=1e-5, betas=(0.9, 0.95), weight_decay=0.0)
    for _ in range(20):
        bf16(probe_data(64)[:8])["action_loss"].backward()
        optimizer.step()
        optimizer.zero_grad()
    moved = bf16.action_model.weight.detach().float() - before.float()
    # only weights within ~5e-3 of zero (bf16 steps finer than 1e-5 there, ~1% of them) move at all
    fraction_moved = float((moved != 0).float().mean())
    print(f"\nupdate of bf16 autocast vs fp32: relative difference {difference:.4f}; weights moved: fp32 master "
          f"{float((got != 0).float().mean()):.3f}, bf16 weights {fraction_moved:.3f}")
    assert fraction_moved < 0.05, fraction_moved
    assert (got != 0).float().mean() > 0.95  # while the fp32 master weights all move


@pytest.mark.parametrize("steps", [2, 3])
def test_accumulation_equals_the_larger_batch(tmp_path, fresh_accelerate, steps):
    """``trainer.gradient_accumulation_steps: k`` at batch 2 gives the gradient, the updates and the logged loss of
    batch 2k, step for step, across epochs (12 samples: an epoch every 6/k steps)."""
    common = {"learning_rate": {"base": 1e-2}, "max_train_steps": 5}
    big = train(probe_cfg(tmp_path, "big", 2 * steps, **common), probe_data(12), accelerator=Accelerator(cpu=True))
    big_grads = LinearProbe.built[-1].seen_grads
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    small = train(probe_cfg(tmp_path, "small", 2, gradient_accumulation_steps=steps, **common), probe_data(12))
    small_grads = LinearProbe.built[-1].seen_grads

    assert small.step == big.step == 5 and len(small_grads) == 5 * steps
    for step, (a, b) in enumerate(zip(small_grads[steps - 1::steps], big_grads, strict=True)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7, msg=f"gradient at step {step + 1}")
    np.testing.assert_allclose(small.losses, big.losses, rtol=1e-5)
    torch.testing.assert_close(final_weight(small), final_weight(big), rtol=1e-5, atol=1e-6)


def test_accumulation_set_on_a_passed_accelerator_must_agree(tmp_path, fresh_accelerate):
    with pytest.raises(ValueError, match=r"trainer.gradient_accumulation_steps=2 but the Accelerator"):
        train(probe_cfg(tmp_path, "x", 2, gradient_accumulation_steps=2), probe_data(12), accelerator=Accelerator(cpu=True))
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    accelerator = Accelerator(cpu=True, gradient_accumulation_plugin=GradientAccumulationPlugin(num_steps=2))
    with pytest.raises(ValueError, match=r"sync_with_dataloader=False"):
        train(probe_cfg(tmp_path, "x", 2, gradient_accumulation_steps=2), probe_data(12), accelerator=accelerator)


def test_eval_interval_and_wandb_are_honoured(tmp_path, fresh_accelerate, monkeypatch):
    """``trainer.eval_interval``: the sampled actions' MSE on the batch every N steps (the probe predicts zeros and
    every target is 0.5, so it is 0.25); ``wandb_project`` / ``wandb_entity``: rank 0 logs the scalars to W&B."""
    import sys
    import types

    calls = {"init": [], "log": []}
    run = types.SimpleNamespace(log=lambda values, step: calls["log"].append((step, values)), finish=lambda: None)
    fake = types.ModuleType("wandb")
    fake.init = lambda **kwargs: calls["init"].append(kwargs) or run
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = probe_cfg(tmp_path, "logged", 4, max_train_steps=5, eval_interval=2)
    cfg.wandb_project, cfg.wandb_entity = "twinbrain", "lab"
    data = [{"x": ex["x"], "action": np.full(DIM, 0.5, np.float32)} for ex in probe_data(12)]
    train(cfg, data)

    assert calls["init"][0]["project"] == "twinbrain" and calls["init"][0]["entity"] == "lab"
    assert [step for step, _ in calls["log"]] == [1, 2, 3, 4, 5]
    assert [step for step, values in calls["log"] if "train/action_mse" in values] == [2, 4]
    assert all(values["train/action_mse"] == pytest.approx(0.25) for _, values in calls["log"] if "train/action_mse" in values)
