"""The embedded trainer: learning, exact resume, frozen Left, checkpoints that load back."""

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from starvla_twinbrain.framework.host_api import STARVLA_AVAILABLE
from starvla_twinbrain.model.qwen_compat import load_vlm
from starvla_twinbrain.runtime import checkpoint as ckpt
from starvla_twinbrain.runtime.trainer import NonFiniteLossError, train

pytestmark = pytest.mark.skipif(STARVLA_AVAILABLE, reason="embedded runtime tests")

HORIZON, DIM = 4, 7
COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], dtype=np.uint8)


def learnable_examples(n: int, seed: int = 0) -> list[dict]:
    """The action chunk is a function of the image colour and the state: learnable from the observation."""
    g = np.random.default_rng(seed)
    out = []
    for i in range(n):
        c = i % len(COLOURS)
        state = g.uniform(-1, 1, (1, DIM)).astype(np.float32)
        base = (COLOURS[c] / 255.0 * 1.6 - 0.8).repeat(3)[:DIM]
        action = np.stack([0.5 * base + 0.4 * state[0] * (t + 1) / HORIZON for t in range(HORIZON)])
        out.append({"image": [Image.new("RGB", (56, 56), tuple(int(v) for v in COLOURS[c]))],
                    "lang": ["pick up the red block", "push the green cube", "open the blue drawer", "lift"][c],
                    "state": state.astype(np.float16), "action": action.astype(np.float16)})
    return out


def make_cfg(base_vlm: str, run_root: Path, run_id: str, **trainer) -> "OmegaConf":
    cfg = OmegaConf.load(Path(__file__).parents[2] / "configs" / "tiny_cpu.yaml")
    cfg.framework.qwenvl.base_vlm = base_vlm
    cfg.framework.action_model.action_horizon = HORIZON
    cfg.run_root_dir, cfg.run_id = str(run_root), run_id
    cfg.datasets.vla_data.per_device_batch_size = 4
    cfg.trainer = OmegaConf.merge(cfg.trainer, trainer)
    return cfg


class Interrupt(Exception):
    pass


class InterruptAt(torch.utils.data.Dataset):
    """Raises when the run asks for its ``stop``-th item: a crash between two checkpoints."""

    def __init__(self, items, stop: int):
        self.items, self.stop, self.calls = items, stop, 0

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        self.calls += 1
        if self.calls > self.stop:
            raise Interrupt
        return self.items[i]


@pytest.fixture(scope="module")
def qwen25(tmp_path_factory):
    from starvla_twinbrain.tiny_vlm import make_tiny_vlm

    return str(make_tiny_vlm(tmp_path_factory.mktemp("vlm") / "tiny-Qwen2.5-VL", family="qwen2_5_vl"))


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

    model = ckpt.load_framework(run / "final_model" / "pytorch_model.pt")
    stock = load_vlm(qwen25, "qwen2_5_vl", "sdpa")
    for (name, a), b in zip(model.left_brain.named_parameters(), stock.parameters()):
        assert torch.equal(a, b), name
    reloaded = ckpt.load_framework(run / "final_model" / "pytorch_model.pt")
    model.eval(), reloaded.eval()
    torch.manual_seed(0)
    first_call = model.predict_action(learnable_examples(4))["normalized_actions"]
    torch.manual_seed(0)
    np.testing.assert_array_equal(first_call, reloaded.predict_action(learnable_examples(4))["normalized_actions"])


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

    def diverging(self, examples, **kwargs):  # a loss that blows up on one batch, as a diverging run does
        loss = forward(self, examples, **kwargs)["action_loss"]
        return {"action_loss": loss * float("nan") if any(ex["lang"] == "diverge" for ex in examples) else loss}

    monkeypatch.setattr(TwinBrain, "forward", diverging)
    data = learnable_examples(8)
    data[5]["lang"] = "diverge"
    with pytest.raises(NonFiniteLossError, match=r"action_loss is (nan|inf) at step \d+ \(epoch 0, batch \d of the epoch"):
        train(make_cfg(qwen25, tmp_path, "nan", max_train_steps=4, save_interval=100), data)
    assert ckpt.latest_checkpoint(tmp_path / "nan") is None


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
    ("datasets.vla_data.action_type", "delta_ee", r"datasets.vla_data.action_type is read by neither"),
    ("is_debug", True, r"is_debug=True: the embedded runtime supports only False"),
])
def test_keys_the_trainer_would_ignore_are_refused(qwen25, tmp_path, key, value, message):
    cfg = make_cfg(qwen25, tmp_path, "refused")
    OmegaConf.update(cfg, key, value, force_add=True)
    with pytest.raises(ValueError, match=message):
        train(cfg, learnable_examples(8))
