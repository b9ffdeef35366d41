"""Policy cost: TwinBrain (Left + Right VLM, AsyMoT, GR00T head) against a single-brain VLA with the same VLM and
the same head (starVLA's QwenGR00T design: the VLM's last hidden states condition the head, state goes to the
head). Ratios measured in one run.

    python benchmarks/bench_policy.py [--json OUT.json] [--repeats 5] [--compile-head] [--freeze-vision]

- training step: forward + backward + AdamW over the trainable parameters, the head's batch repeated
  ``repeated_diffusion_steps`` (8, starVLA's default) times with the VLMs run once;
- inference: one observation → one action chunk (VLMs once, 4 Euler steps of the head), batch 1;
- peak training memory: the process's peak RSS over its state before any model was loaded;
- checkpoint: the bytes of the saved state dict (TwinBrain stores the Left Brain by reference).
- low-memory training (memory only, each in its own process): TwinBrain fully fine-tuned, with LoRA on the Right
  (``framework.twinbrain.right_lora``: r 16, alpha 32, the decoder's q/k/v/o/gate/up/down), and LoRA with the int8
  Left (``left_precision: int8``), against the single brain: peak training memory, trainable bytes, the bytes the
  weights, gradients and AdamW state really hold (int8 weights counted as int8 + scales), checkpoint.
Times: both models in one process, timed in alternation round by round, so that machine drift hits both alike.
Memory and checkpoint: each variant in its own process.
Median of ``--repeats`` timed rounds after two warm-up rounds (inference: 4× as many). ``--compile-head`` compiles both
heads' DiT with ``torch.compile`` (``framework.twinbrain.compile_action_head``); ``--freeze-vision`` freezes both
vision towers (TwinBrain then computes the image features once for both brains). A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import resource
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from bench_backbone import _alternate, _rss_kb, _run_worker  # noqa: E402

ROOT = Path(__file__).parents[1]
MODEL = dict(hidden_size=512, num_layers=4, num_heads=8, num_kv_heads=2)
HEAD_LAYERS, HORIZON, DIM, BATCH, IMAGE = 1, 16, 7, 4, 112


LORA = {"r": 16, "alpha": 32}
# variant -> framework.twinbrain settings; "single" is the baseline
LOW_MEMORY_VARIANTS = {"twin": {}, "twin_lora": {"right_lora": LORA},
                       "twin_lora_int8": {"right_lora": LORA, "left_precision": "int8"}}


def _config(vlm: str, compile_head: bool, freeze_vision: bool, **twinbrain):
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(ROOT / "configs" / "tiny_cpu.yaml")
    cfg.framework.qwenvl.base_vlm = vlm
    cfg.framework.twinbrain.compile_action_head = compile_head
    cfg.framework.twinbrain.freeze_right_vision = freeze_vision
    for key, value in twinbrain.items():
        cfg.framework.twinbrain[key] = value
    cfg.framework.action_model.update(action_horizon=HORIZON, action_dim=DIM, state_dim=DIM,
                                      repeated_diffusion_steps=8, hidden_size=1024)
    cfg.framework.action_model.diffusion_model_cfg.update(num_layers=HEAD_LAYERS, output_dim=1024)
    cfg.datasets.vla_data.obs_image_size = [IMAGE, IMAGE]
    return cfg


class SingleBrainVLA(nn.Module):
    """The baseline: one VLM (the Right Brain's prompt, stock attention, no Left, no state tokens) + the same head."""

    def __init__(self, cfg):
        super().__init__()
        from starvla_twinbrain.config import TwinBrainConfig
        from starvla_twinbrain.framework.twinbrain import InferenceCompiledDiT, build_action_head
        from starvla_twinbrain.model.processing import family_of, load_processor
        from starvla_twinbrain.model.prompts import PromptBuilder
        from starvla_twinbrain.model.qwen_compat import load_vlm, text_hidden_size, vlm_core

        twin = TwinBrainConfig.from_omegaconf(cfg)
        vlm = twin.backbone.base_vlm
        stock = load_vlm(vlm, family_of(vlm), "sdpa")
        self.vlm = vlm_core(stock)
        if twin.options.freeze_right_vision:
            self.vlm.visual.requires_grad_(False)
        self.prompts = PromptBuilder(load_processor(vlm), twin.backbone.prompts)
        # QwenGR00T gives the state to the head's own state token (TwinBrain's state_into: head)
        head_twin = dataclasses.replace(twin, options=dataclasses.replace(twin.options, state_into="head"))
        self.action_model = build_action_head(cfg, head_twin, text_hidden_size(stock))
        self.repeats = int(twin.action_model["repeated_diffusion_steps"])
        self.compiled_head = InferenceCompiledDiT() if twin.options.compile_action_head else None

    def _stack(self, examples, key: str) -> torch.Tensor:  # on the model's device, in its dtype
        param = next(self.vlm.parameters())
        return torch.from_numpy(np.stack([np.asarray(ex[key], np.float32) for ex in examples])).to(param.device, param.dtype)

    def _condition(self, examples):
        _, right = self.prompts([ex["image"] for ex in examples], [ex["lang"] for ex in examples])
        param = next(self.vlm.parameters())
        right = right.to(param.device, param.dtype)
        hidden = self.vlm(**right.tensors, use_cache=False).last_hidden_state
        return hidden, right.attention_mask.bool(), self._stack(examples, "state")

    def forward(self, examples):
        hidden, mask, state = self._condition(examples)
        actions = self._stack(examples, "action")
        r = self.repeats
        return {"action_loss": self.action_model(hidden.repeat(r, 1, 1), actions.repeat(r, 1, 1),
                                                 state.repeat(r, 1, 1), encoder_attention_mask=mask.repeat(r, 1))}

    @torch.no_grad()
    def predict_action(self, examples):
        hidden, mask, state = self._condition(examples)
        with self.compiled_head.active(self.action_model) if self.compiled_head else contextlib.nullcontext():
            return self.action_model.predict_action(hidden, state, encoder_attention_mask=mask)


def _examples(n: int) -> list[dict]:
    from PIL import Image

    g = np.random.default_rng(0)
    return [{"image": [Image.fromarray(g.integers(0, 256, (IMAGE, IMAGE, 3), dtype=np.uint8))],
             "lang": f"pick up the object number {i} and place it in the basket",
             "state": g.normal(size=(1, DIM)).astype(np.float32),
             "action": g.uniform(-1, 1, (HORIZON, DIM)).astype(np.float32)} for i in range(n)]


def _build(variant: str, cfg):
    from starvla_twinbrain.framework.twinbrain import TwinBrain

    torch.manual_seed(0)
    return TwinBrain(cfg) if variant.startswith("twin") else SingleBrainVLA(cfg)


def _train_step(model, batch):
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5)

    def step():
        loss = model(batch)["action_loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step.optimizer = optimizer
    return step


def _memory_worker(variant: str, vlm: str, compile_head: bool, freeze_vision: bool) -> dict:
    """One variant in a fresh process: peak RSS of training over the state before any model was loaded, and the
    checkpoint's size."""
    from starvla_twinbrain.model.low_memory import module_bytes, storage_bytes

    baseline = _rss_kb()
    model = _build(variant, _config(vlm, compile_head, freeze_vision, **LOW_MEMORY_VARIANTS.get(variant, {}))).train()
    step = _train_step(model, _examples(BATCH))
    for _ in range(3):
        step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    trainable = [p for p in model.parameters() if p.requires_grad]
    grads = sum(storage_bytes(p.grad) for p in trainable if p.grad is not None)
    optimizer = sum(storage_bytes(t) for p in trainable for t in step.optimizer.state[p].values() if torch.is_tensor(t))
    return {"peak_growth_mb": (peak - baseline) / 1024, "checkpoint_mb": buffer.tell() / 2**20,
            "trainable_mb": sum(p.numel() * p.element_size() for p in trainable) / 2**20,
            "weights_mb": module_bytes(model) / 2**20, "grads_adamw_mb": (grads + optimizer) / 2**20,
            "trainable_m": sum(p.numel() for p in trainable) / 1e6,
            "parameters_m": sum(p.numel() for p in model.parameters()) / 1e6}


def _timing_worker(vlm: str, repeats: int, compile_head: bool, freeze_vision: bool) -> dict:
    """Both variants in one process: training steps, then inference (the first calls compile with --compile-head)."""
    cfg = _config(vlm, compile_head, freeze_vision)
    models = {variant: _build(variant, cfg) for variant in ("single", "twin")}
    batch, one = _examples(BATCH), _examples(1)
    for model in models.values():
        model.train()
    steps = _alternate({variant: _train_step(model, batch) for variant, model in models.items()}, repeats)
    for model in models.values():
        model.eval()
    infer = _alternate({variant: (lambda m=model: m.predict_action(one)) for variant, model in models.items()},
                       4 * repeats)
    return {variant: {"step_s": steps[variant], "infer_s": infer[variant]} for variant in models}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--compile-head", action="store_true", help="torch.compile both heads' DiT")
    parser.add_argument("--freeze-vision", action="store_true",
                        help="freeze the vision tower in both (TwinBrain: framework.twinbrain.freeze_right_vision, "
                        "so the Left's image features serve the Right too)")
    parser.add_argument("--worker", choices=["single", *LOW_MEMORY_VARIANTS, "timing"], help=argparse.SUPPRESS)
    parser.add_argument("--vlm", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "timing":
        print(json.dumps(_timing_worker(args.vlm, args.repeats, args.compile_head, args.freeze_vision)))
        return
    if args.worker:
        print(json.dumps(_memory_worker(args.worker, args.vlm, args.compile_head, args.freeze_vision)))
        return

    from starvla_twinbrain.tiny_vlm import make_tiny_vlm

    with tempfile.TemporaryDirectory() as tmp:
        vlm = str(make_tiny_vlm(Path(tmp) / "bench-Qwen2.5-VL", family="qwen2_5_vl", image_size=IMAGE, **MODEL))
        flags = ["--vlm", vlm, "--repeats", str(args.repeats)]
        flags += ["--compile-head"] * args.compile_head + ["--freeze-vision"] * args.freeze_vision
        memory = {variant: _run_worker(__file__, variant, *flags) for variant in ("single", *LOW_MEMORY_VARIANTS)}
        single, twin = memory["single"], memory["twin"]
        timing = _run_worker(__file__, "timing", *flags)
        single.update(timing["single"])
        twin.update(timing["twin"])

    print(f"\nPolicy: Qwen2.5-VL-like VLM (hidden {MODEL['hidden_size']}, {MODEL['num_layers']} layers) + GR00T head "
          f"(DiT-B, {HEAD_LAYERS} layers), horizon {HORIZON}, batch {BATCH} (inference: 1), {IMAGE}x{IMAGE} image, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads"
          f"{', head compiled' if args.compile_head else ''}{', vision frozen' if args.freeze_vision else ''}")
    print(f"{'':34}{'single':>10}{'twin':>10}{'ratio':>8}")
    rows = (("step_s", "train step (fwd+bwd+AdamW) ms", 1e3), ("peak_growth_mb", "peak training memory MB", 1),
            ("infer_s", "inference, one chunk ms", 1e3), ("checkpoint_mb", "checkpoint MB", 1),
            ("trainable_mb", "trainable parameters MB", 1), ("parameters_m", "parameters (M)", 1))
    for key, label, scale in rows:
        print(f"{label:34}{single[key] * scale:10.1f}{twin[key] * scale:10.1f}{twin[key] / single[key]:8.2f}")
    print_low_memory(memory)
    if args.json:
        args.json.write_text(json.dumps({"model": MODEL, "head_layers": HEAD_LAYERS, "batch": BATCH,
                                         "compile_head": args.compile_head, "freeze_vision": args.freeze_vision,
                                         "single": single, "twin": twin, "low_memory": memory, "lora": LORA},
                                        indent=2))


def print_low_memory(memory: dict) -> None:
    names = ("single", *LOW_MEMORY_VARIANTS)
    print(f"\nLow-memory training (each variant in its own process; ratio: to the single brain; LoRA r {LORA['r']})")
    print(f"{'':30}" + "".join(f"{n:>16}" for n in names))
    rows = (("peak_growth_mb", "peak training memory MB"), ("trainable_mb", "trainable parameters MB"),
            ("trainable_m", "trainable parameters (M)"), ("weights_mb", "weights held MB"),
            ("grads_adamw_mb", "gradients + AdamW MB"), ("checkpoint_mb", "checkpoint MB"))
    for key, label in rows:
        base = memory["single"][key]
        print(f"{label:30}" + "".join(f"{memory[n][key]:9.1f} ({memory[n][key] / base:4.2f})" for n in names))


if __name__ == "__main__":
    main()
