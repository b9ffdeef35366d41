"""Builders the test modules share: images, starVLA example dicts, configs. Plain functions, so a test module imports
them from here and never from another test module; the fixtures built from them (tiny VLMs, a trained run) are in
``conftest.py``."""

from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image

TINY_CONFIG = Path(__file__).parents[1] / "configs" / "tiny_cpu.yaml"

# The framework tests' shapes (state and action sizes differ, so a transposition cannot pass).
ACTION_DIM, STATE_DIM, HORIZON = 7, 5, 4
# The trainer's learnable task: state and action are both DIM-dimensional.
DIM = 7
COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], dtype=np.uint8)


def random_image(seed: int, size: int = 56) -> Image.Image:
    g = torch.Generator().manual_seed(seed)
    return Image.fromarray(torch.randint(0, 256, (size, size, 3), generator=g, dtype=torch.uint8).numpy())


FP32_TOL = dict(rtol=1e-5, atol=1e-5)

BACKBONE_SAMPLES = [  # different prompt lengths and image counts; one without state, one without robot type
    dict(images=[random_image(0)], lang="pick up the red block", robot="widowx", state=[0.1, -0.2, 0.3, 0.0, 1.0]),
    dict(images=[random_image(1), random_image(2)], lang="put the spoon on the towel and then close the drawer",
         robot="franka", state=None),
    dict(images=[random_image(3)], lang="open", robot=None, state=[1.0, 2.0, -1.0, 0.5, 0.0]),
]


def build_backbone(path, **overrides):
    """A ``DualBrainBackbone`` on ``path`` with ``BackboneConfig`` overrides, its new weights from seed 0."""
    from starvla_twinbrain.config import BackboneConfig
    from starvla_twinbrain.model.dual_brain import DualBrainBackbone

    torch.manual_seed(0)
    return DualBrainBackbone(BackboneConfig(base_vlm=path, **overrides))


def prepare_backbone(backbone, samples):
    """``backbone.prepare`` of ``BACKBONE_SAMPLES``-style dicts (states only where the backbone has a state encoder)."""
    states = [s["state"] for s in samples] if backbone.state_encoder is not None else None
    return backbone.prepare([s["images"] for s in samples], [s["lang"] for s in samples],
                            [s["robot"] for s in samples], states)


def make_config(base_vlm: str, **twinbrain) -> "OmegaConf":
    """configs/tiny_cpu.yaml on ``base_vlm`` with STATE_DIM / HORIZON and ``framework.twinbrain`` overrides."""
    cfg = OmegaConf.load(TINY_CONFIG)
    cfg.framework.qwenvl.base_vlm = base_vlm
    cfg.framework.action_model.state_dim = STATE_DIM
    cfg.framework.action_model.action_horizon = HORIZON
    cfg.framework.twinbrain = OmegaConf.merge(cfg.framework.twinbrain, twinbrain)
    return cfg


def examples(n=3, seed=0, with_action=True) -> list[dict]:
    """starVLA example dicts for ``make_config``'s model: random images, STATE_DIM states, HORIZON × ACTION_DIM."""
    g = np.random.default_rng(seed)
    out = []
    for b in range(n):
        ex = {"image": [random_image(seed + b)], "lang": ["pick up the block", "open the drawer", "stack cups"][b % 3],
              "state": g.standard_normal((1, STATE_DIM)).astype(np.float16)}
        if with_action:
            ex["action"] = g.uniform(-1, 1, (HORIZON, ACTION_DIM)).astype(np.float16)
        out.append(ex)
    return out


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
    """A training run of configs/tiny_cpu.yaml on ``base_vlm`` (batch 4, HORIZON) with ``trainer`` overrides."""
    cfg = OmegaConf.load(TINY_CONFIG)
    cfg.framework.qwenvl.base_vlm = base_vlm
    cfg.framework.action_model.action_horizon = HORIZON
    cfg.run_root_dir, cfg.run_id = str(run_root), run_id
    cfg.datasets.vla_data.per_device_batch_size = 4
    cfg.trainer = OmegaConf.merge(cfg.trainer, trainer)
    return cfg


def request_examples(n: int, seed: int = 1) -> list[dict]:
    """``learnable_examples`` as a simulator sends them: uint8 arrays and float32 state."""
    return [{"image": [np.asarray(ex["image"][0])], "lang": ex["lang"], "state": ex["state"].astype(np.float32)}
            for ex in learnable_examples(n, seed)]


def serving_statistics(examples) -> dict:
    """Dataset statistics (key ``toy_robot``) in which the examples' actions and states are scaled "raw" units, so
    un-normalising is not the identity."""
    def stats(x):
        return {"min": x.min(0).tolist(), "max": x.max(0).tolist(), "mean": x.mean(0).tolist(),
                "std": x.std(0).tolist(), "q01": np.quantile(x, 0.01, 0).tolist(),
                "q99": np.quantile(x, 0.99, 0).tolist(), "mask": [True] * x.shape[1]}
    actions = np.concatenate([np.asarray(ex["action"], np.float32) for ex in examples]) * 3 + 1
    states = np.concatenate([np.asarray(ex["state"], np.float32) for ex in examples]) * 2
    return {"toy_robot": {"action": stats(actions), "state": stats(states), "num_transitions": len(examples)}}


class Interrupt(Exception):
    """The crash ``InterruptAt`` simulates."""


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
