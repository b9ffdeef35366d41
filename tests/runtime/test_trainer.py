"""The embedded trainer: learning, exact resume, frozen Left, checkpoints that load back."""

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from starvla_twinbrain.framework.pretrained import load_framework
from starvla_twinbrain.host.api import STARVLA_AVAILABLE
from starvla_twinbrain.model.qwen_compat import load_vlm
from starvla_twinbrain.runtime import checkpoint as ckpt
from starvla_twinbrain.runtime.trainer import NonFiniteLossError, train
from tests.factories import DIM, HORIZON, Interrupt, InterruptAt, learnable_examples, make_cfg

pytestmark = pytest.mark.skipif(STARVLA_AVAILABLE, reason="embedded runtime tests")

@pytest.mark.slow
def test_loss_halves_and_left_stays_the_base(qwen25, tmp_path):
    cfg = make_cfg(qwen25, tmp_path, "learn", max_train_steps=120, save_interval=60, num_warmup_steps=5)
    result = train(cfg, learnable_examples(32))
    first, last = np.mean(result.losses[:10]), np.mean(result.losses[-10:])
    assert last < 0.5 * first, (first, last)

    run = result.run_dir
    for name in ("config.yaml", "config.full.yaml", "summary.jsonl", "loss_curve.png",
                 "checkpoints/steps_60_pytorch_model.pt", "checkpoints/steps_120_pytorch_model.pt",
                 "final_model/pytorch_model.pt"):
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))

    model = load_framework(run / "final_model" / "pytorch_model.pt")
    stock = load_vlm(qwen25, "qwen2_5_vl", "sdpa")
    for (name, a), b in zip(model.left_brain.named_parameters(), stock.parameters()):
        assert torch.equal(a, b), name
    reloaded = load_framework(run / "final_model" / "pytorch_model.pt")
    model.eval(), reloaded.eval()
    torch.manual_seed(0)
    first_call = model.predict_action(learnable_examples(4))["normalized_actions"]
    torch.manual_seed(0)
    np.testing.assert_array_equal(first_call, reloaded.predict_action(learnable_examples(4))["normalized_actions"])


@pytest.mark.slow  # an end-to-end run: the full suite has it, the fast tier stays under 3 minutes
def test_resume_reaches_the_same_state(qwen25, tmp_path):
    data = learnable_examples(12)
    common = dict(max_train_steps=6, save_interval=3, num_warmup_steps=1)
    straight = train(make_cfg(qwen25, tmp_path, "straight", **common), data)

    with pytest.raises(Interrupt):  # dies while fetching step 5's batch, after the step-3 checkpoint
        train(make_cfg(qwen25, tmp_path, "resumed", **common), InterruptAt(data, stop=4 * 4))
    assert ckpt.latest_checkpoint(tmp_path / "resumed")[0] == 3
    resumed = train(make_cfg(qwen25, tmp_path, "resumed", is_resume=True, **common), data)

    assert resumed.step == 6
    np.testing.assert_allclose(resumed.losses, straight.losses, rtol=1e-6, atol=1e-7)
    a = ckpt.load_state_dict(straight.run_dir / "final_model" / "pytorch_model.pt")
    b = ckpt.load_state_dict(resumed.run_dir / "final_model" / "pytorch_model.pt")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-6, atol=1e-7, msg=key)


def test_non_finite_actions_are_refused_naming_the_example(qwen25):
    from starvla_twinbrain.framework.twinbrain import TwinBrain

    model = TwinBrain(make_cfg(qwen25, Path("unused"), "x"))
    data = learnable_examples(2)
    data[1]["action"] = np.full((HORIZON, DIM), np.inf, dtype=np.float16)
    with pytest.raises(ValueError, match=r"examples\[1\]\['action'\]: contains NaN or inf"):
        model(data)


def test_non_finite_loss_stops_before_the_step(qwen25, tmp_path, monkeypatch):
    from starvla_twinbrain.framework.twinbrain import TwinBrain

    forward = TwinBrain.forward
    seen = {}

    def diverging(self, examples, **kwargs):  # a loss that blows up on one batch, as a diverging run does
        loss = forward(self, examples, **kwargs)["action_loss"]
        if not any(ex["lang"] == "diverge" for ex in examples):
            return {"action_loss": loss}
        seen["model"] = self  # the weights as the diverging step found them
        seen["before"] = {k: v.detach().clone() for k, v in self.state_dict().items()}
        return {"action_loss": loss * float("nan")}

    monkeypatch.setattr(TwinBrain, "forward", diverging)
    data = learnable_examples(8)
    data[5]["lang"] = "diverge"
    with pytest.raises(NonFiniteLossError, match=r"action_loss is (nan|inf) at step \d+ \(epoch 0, batch \d of the epoch"):
        train(make_cfg(qwen25, tmp_path, "nan", max_train_steps=4, save_interval=100), data)
    assert ckpt.latest_checkpoint(tmp_path / "nan") is None
    after = seen["model"].state_dict()
    assert after.keys() == seen["before"].keys()
    for name, before in seen["before"].items():  # no update was applied: every weight as before, all finite
        assert torch.equal(after[name], before), name
        assert not before.is_floating_point() or torch.isfinite(before).all(), name


def test_bad_learning_rate_path_is_an_error(qwen25, tmp_path):
    cfg = make_cfg(qwen25, tmp_path, "bad", max_train_steps=1)
    cfg.trainer.learning_rate = {"base": 1e-4, "right_brian": 1e-4}
    with pytest.raises(ValueError, match=r"trainer\.learning_rate\.right_brian: 'right_brian' names no module"):
        train(cfg, learnable_examples(4))


def test_truncated_checkpoint_is_refused(tmp_path):
    path = tmp_path / "steps_3_pytorch_model.pt"
    torch.save({"w": torch.zeros(1000)}, path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"steps_3_pytorch_model\.pt cannot be read"):
        ckpt.load_state_dict(path)


@pytest.mark.parametrize("config", sorted((Path(__file__).parents[2] / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_use_only_keys_the_trainer_honours(config):
    from starvla_twinbrain.runtime.trainer import check_config_keys

    check_config_keys(OmegaConf.load(config))


@pytest.mark.parametrize("key, value, message", [
    ("trainer.gradient_acumulation_steps", 2, r"trainer.gradient_acumulation_steps is not read .*did you mean trainer.gradient_accumulation_steps"),
    ("trainer.enable_mixed_precision_training", True, r"trainer.enable_mixed_precision_training is not read by the embedded trainer"),
    ("datasets.vla_data.dataset_py", "oxe_rlds", r"datasets.vla_data.dataset_py='oxe_rlds': the embedded runtime supports only 'lerobot_datasets'"),
    ("trainer.warmup_ratio", 0.1, r"trainer.warmup_ratio is not read by the embedded trainer"),  # a starVLA key
    ("is_debug", True, r"is_debug=True: the embedded runtime supports only False"),
])
def test_keys_the_trainer_would_ignore_are_refused(qwen25, tmp_path, key, value, message):
    cfg = make_cfg(qwen25, tmp_path, "refused")
    OmegaConf.update(cfg, key, value, force_add=True)
    with pytest.raises(ValueError, match=message):
        train(cfg, learnable_examples(8))
