"""Policy cost: what a user pays moving from starVLA's QwenGR00T to TwinBrain, and what each TwinBrain lever saves.

    python benchmarks/bench_policy.py [--repeats 5] [--json OUT.json]
    PYTHONPATH=<starVLA checkout>:. STARVLA_TWINBRAIN_AUTOLOAD=0 <starVLA's python> benchmarks/bench_policy.py

The baseline is QwenGR00T as starVLA builds it (``QWen2_5.py`` ``build_qwenvl_inputs`` and ``QwenGR00T.forward``):
one user turn (the images, then the instruction) through the chat template, which adds its default system turn;
the full ``*ForConditionalGeneration`` with ``output_hidden_states``; its last hidden states condition the GR00T
head, the state goes to the head. Where starVLA is importable the baseline is starVLA's own QwenGR00T, built by
its ``build_framework``; elsewhere this file's replica of it (same prompt, same calls, the built-in head, which
equals starVLA's numerically: tests/host).

TwinBrain runs with the paper's prompts and settings (``configs/tiny_cpu.yaml`` with the model below), then with
one lever at a time: ``share_prefix: false`` (the plain Left), ``freeze_right_vision``, ``condition:
action_queries``, ``compile_action_head``, and the best combination.

The VLM (both models): Qwen2.5-VL-like, 8 layers, hidden 512, 8 query / 2 KV heads, one 224x224 image (64 image
tokens), random weights, and a tokenizer with real token counts (bench_tokenizer.py: a BPE of 8k tokens trained on
English). The head: GR00T DiT-B with 1 layer (the heads are small next to 3B VLMs), 16-step chunks,
``repeated_diffusion_steps`` 8, 4 Euler steps. Batch 4 for training (AdamW over the trainable parameters);
inference gives one chunk for one observation.

Times: every model in one process, timed in alternation round by round, so that the machine's drift hits all
alike. Each ratio is the median of per-round ratios (variant / baseline in the same round), with its range.
Memory: peak RSS growth of 3 training steps, each model in its own process. A benchmark, not a test.

Low-memory training (memory only, each in its own process): TwinBrain fully fine-tuned, with LoRA on the Right
(``framework.twinbrain.right_lora``: r 16, alpha 32, the decoder's q/k/v/o/gate/up/down), and LoRA with the int8
Left (``left_precision: int8``), against QwenGR00T: peak training memory, trainable bytes, the bytes the weights,
gradients and AdamW state really hold (int8 weights counted as int8 + scales), checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import io
import json
import os
import resource
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from bench_backbone import _rss_kb, _run_worker, alternate_times  # noqa: E402
from bench_tokenizer import corpus_description, tokenizer_kwargs  # noqa: E402

ROOT = Path(__file__).parents[1]
MODEL = dict(hidden_size=512, num_layers=8, num_heads=8, num_kv_heads=2)
HEAD_LAYERS, HORIZON, DIM, BATCH, IMAGE = 1, 16, 7, 4, 224
BASELINE = "qwengr00t"
REPLICA = "qwengr00t_replica"  # timed beside starVLA's own QwenGR00T where starVLA is importable
# TwinBrain variants: framework.twinbrain overrides. None: the paper's settings (share_prefix on).
LEVERS: dict[str, dict] = {
    "twin": {},
    "no_share_prefix": {"share_prefix": False},
    "freeze_right_vision": {"freeze_right_vision": True},
    "action_queries": {"condition": "action_queries"},
    "compiled_head": {"compile_action_head": True},
    "best": {"freeze_right_vision": True, "condition": "action_queries", "compile_action_head": True},
}
LORA = {"r": 16, "alpha": 32}
LOW_MEMORY_VARIANTS = {"twin_lora": {"right_lora": LORA}, "twin_lora_int8": {"right_lora": LORA, "left_precision": "int8"}}
# What a lever does to the model's outputs: exact ones are measured (max action difference to "twin").
ACCURACY = {
    "twin": "reference", "no_share_prefix": "exact", "compiled_head": "exact (float)",
    "freeze_right_vision": "Right's vision tower not trained",
    "action_queries": "head sees 32 learned queries, not all tokens (not the paper's)",
    "best": "both of the above",
}


def starvla_available() -> bool:
    return importlib.util.find_spec("starVLA") is not None


def _config(vlm: str, overrides: dict | None = None, framework: str = "TwinBrain"):
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(ROOT / "configs" / "tiny_cpu.yaml")
    cfg.framework.name = framework
    cfg.framework.qwenvl.base_vlm = vlm
    cfg.framework.qwenvl.attn_implementation = "sdpa"
    cfg.framework.action_model.update(action_horizon=HORIZON, action_dim=DIM, state_dim=DIM,
                                      repeated_diffusion_steps=8, hidden_size=1024, num_inference_timesteps=4)
    cfg.framework.action_model.diffusion_model_cfg.update(num_layers=HEAD_LAYERS, output_dim=1024,
                                                          cross_attention_dim=MODEL["hidden_size"])
    cfg.datasets.vla_data.obs_image_size = [IMAGE, IMAGE]
    cfg.framework.twinbrain.update(overrides or {})
    return cfg


class QwenGR00TReplica(nn.Module):
    """starVLA's QwenGR00T without starVLA: its prompt (chat template with the default system turn, images, then
    the instruction), the full VLM with ``output_hidden_states``, the last hidden states + state into the head."""

    def __init__(self, cfg):
        super().__init__()
        from starvla_twinbrain.config import TwinBrainConfig
        from starvla_twinbrain.framework.twinbrain import build_action_head
        from starvla_twinbrain.model.processing import family_of, load_processor
        from starvla_twinbrain.model.qwen_compat import load_vlm, text_hidden_size

        twin = TwinBrainConfig.from_omegaconf(cfg)
        vlm = twin.qwenvl.base_vlm
        self.qwen_vl_interface = load_vlm(vlm, family_of(vlm), "sdpa")
        self.processor = load_processor(vlm)
        head_twin = dataclasses.replace(twin, options=dataclasses.replace(twin.options, state_into="head"))
        self.action_model = build_action_head(cfg, head_twin, text_hidden_size(self.qwen_vl_interface))
        self.repeats = twin.action_model.repeated_diffusion_steps

    def _stack(self, examples, key: str) -> torch.Tensor:
        weight = next(self.action_model.parameters())
        return torch.from_numpy(np.stack([np.asarray(ex[key], np.float32) for ex in examples])).to(weight)

    def build_qwenvl_inputs(self, images, instructions):
        messages = [[{"role": "user", "content": [{"type": "image"} for _ in imgs] + [{"type": "text", "text": text}]}]
                    for imgs, text in zip(images, instructions)]
        texts = [self.processor.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in messages]
        return self.processor(text=texts, images=[img for imgs in images for img in imgs], padding=True,
                              return_tensors="pt")

    def _condition(self, examples):
        inputs = self.build_qwenvl_inputs([ex["image"] for ex in examples], [ex["lang"] for ex in examples])
        weight = next(self.qwen_vl_interface.parameters())
        inputs = {k: v.to(weight.device, weight.dtype) if v.is_floating_point() else v.to(weight.device)
                  for k, v in inputs.items()}
        hidden = self.qwen_vl_interface(**inputs, output_hidden_states=True, return_dict=True).hidden_states[-1]
        return hidden, inputs["attention_mask"].bool(), self._stack(examples, "state")

    def forward(self, examples):
        hidden, mask, state = self._condition(examples)
        actions, r = self._stack(examples, "action"), self.repeats
        return {"action_loss": self.action_model(hidden.repeat(r, 1, 1), actions.repeat(r, 1, 1),
                                                 state.repeat(r, 1, 1), encoder_attention_mask=mask.repeat(r, 1))}

    @torch.no_grad()
    def predict_action(self, examples, **kwargs):
        hidden, mask, state = self._condition(examples)
        return self.action_model.predict_action(hidden, state, encoder_attention_mask=mask)


def _examples(n: int) -> list[dict]:
    from PIL import Image

    g = np.random.default_rng(0)
    lang = ["pick up the red block and put it in the bowl", "put the spoon on the towel",
            "open the top drawer of the cabinet", "stack the green cube on the yellow cube"]
    return [{"image": [Image.fromarray(g.integers(0, 256, (IMAGE, IMAGE, 3), dtype=np.uint8))],
             "lang": lang[i % len(lang)],
             "state": g.normal(size=(1, DIM)).astype(np.float32),
             "action": g.uniform(-1, 1, (HORIZON, DIM)).astype(np.float32)} for i in range(n)]


def _build(variant: str, vlm: str, use_starvla: bool):
    torch.manual_seed(0)  # every TwinBrain variant gets the same weights
    if variant == REPLICA:
        return QwenGR00TReplica(_config(vlm, framework="QwenGR00T"))
    if variant == BASELINE:
        if use_starvla:
            from starVLA.model.framework.base_framework import build_framework

            return build_framework(_config(vlm, framework="QwenGR00T"))
        return QwenGR00TReplica(_config(vlm, framework="QwenGR00T"))
    from starvla_twinbrain.framework.twinbrain import TwinBrain

    return TwinBrain(_config(vlm, LEVERS[variant] if variant in LEVERS else LOW_MEMORY_VARIANTS[variant]))


def _tokens(model, variant: str, examples) -> dict:
    """Mean valid tokens per row of each stream on the benchmark batch."""
    images, lang = [ex["image"] for ex in examples], [ex["lang"] for ex in examples]
    if variant in (BASELINE, REPLICA):
        interface = getattr(model, "qwen_vl_interface")
        build = getattr(interface, "build_qwenvl_inputs", None) or model.build_qwenvl_inputs
        return {"vlm": float(build(images=images, instructions=lang)["attention_mask"].sum(1).float().mean())}
    backbone = model.backbone
    inputs = backbone.prepare(images, lang, None, [ex["state"] for ex in examples])
    out = {"left": float(inputs.left.attention_mask.sum(1).float().mean()),
           "right": float(inputs.right.attention_mask.sum(1).float().mean())}
    if backbone.shares_prefix(inputs.left):
        out["left_shared_prefix"] = len(backbone.left_prefix)
    return out


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


def _summary(times: dict[str, list[float]]) -> dict[str, dict]:
    base = times[BASELINE]
    out = {}
    for name, t in times.items():
        ratios = [a / b for a, b in zip(t, base)]
        out[name] = {"median_s": statistics.median(t), "ratio": statistics.median(ratios),
                     "ratio_min": min(ratios), "ratio_max": max(ratios)}
    return out


def _memory_worker(variant: str, vlm: str, use_starvla: bool) -> dict:
    """One variant in a fresh process: peak RSS of 3 training steps over the state before any model was loaded, the
    bytes its weights, trainable parameters, gradients and AdamW state hold, and its checkpoint's size."""
    from starvla_twinbrain.model.low_memory import module_bytes, storage_bytes

    baseline = _rss_kb()
    model = _build(variant, vlm, use_starvla).train()
    step = _train_step(model, _examples(BATCH))
    for _ in range(3):
        step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    trainable = [p for p in model.parameters() if p.requires_grad]
    grads = sum(storage_bytes(p.grad) for p in trainable if p.grad is not None)
    adamw = sum(storage_bytes(t) for p in trainable for t in step.optimizer.state[p].values() if torch.is_tensor(t))
    return {"peak_growth_mb": (peak - baseline) / 1024, "checkpoint_mb": buffer.tell() / 2**20,
            "trainable_mb": sum(p.numel() * p.element_size() for p in trainable) / 2**20,
            "trainable_m": sum(p.numel() for p in trainable) / 1e6, "weights_mb": module_bytes(model) / 2**20,
            "grads_adamw_mb": (grads + adamw) / 2**20}


def _variants(use_starvla: bool) -> tuple[str, ...]:
    return (BASELINE, *([REPLICA] if use_starvla else []), *LEVERS)


def _timing_worker(vlm: str, repeats: int, use_starvla: bool) -> dict:
    models = {v: _build(v, vlm, use_starvla) for v in _variants(use_starvla)}
    batch, one = _examples(BATCH), _examples(1)
    tokens = {v: _tokens(m, v, batch) for v, m in models.items()}
    # compile_action_head changes inference only: its training step is the model without it
    trained = [v for v in models if v != "compiled_head"]
    for model in models.values():
        model.train()
    steps = alternate_times({v: _train_step(models[v], batch) for v in trained}, repeats)
    for model in models.values():
        model.eval()
    infer = alternate_times({v: (lambda m=m: m.predict_action(one)) for v, m in models.items()}, 4 * repeats)
    # The exact levers against the default, same weights (the timed steps moved each model's own), same noise
    # (TwinBrain's predict_action seed)
    reference = models["twin"].predict_action(one, seed=0)["normalized_actions"]
    difference = {}
    for v in ("no_share_prefix", "compiled_head"):
        models[v].load_state_dict(models["twin"].state_dict())
        difference[v] = float(np.abs(models[v].predict_action(one, seed=0)["normalized_actions"] - reference).max())
    return {"tokens": tokens, "train": _summary(steps), "infer": _summary(infer), "action_difference": difference}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--no-starvla", action="store_true", help="use the replica even where starVLA is importable")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--vlm", help=argparse.SUPPRESS)
    args = parser.parse_args()
    use_starvla = starvla_available() and not args.no_starvla
    warnings.filterwarnings("ignore", message="CUDA is not available")  # starVLA's CUDA autocast blocks, on CPU
    if args.worker == "timing":
        print(json.dumps(_timing_worker(args.vlm, args.repeats, use_starvla)))
        return
    if args.worker:
        print(json.dumps(_memory_worker(args.worker, args.vlm, use_starvla)))
        return

    from starvla_twinbrain.tiny_vlm import make_tiny_vlm

    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        vlm = str(make_tiny_vlm(Path(tmp) / "bench-Qwen2.5-VL", family="qwen2_5_vl", image_size=IMAGE, **MODEL,
                                **tokenizer_kwargs()))
        flags = ["--vlm", vlm, "--repeats", str(args.repeats)] + ["--no-starvla"] * args.no_starvla
        measured = {v: _run_worker(__file__, v, *flags)
                    for v in (*_variants(use_starvla), *LOW_MEMORY_VARIANTS) if v != "compiled_head"}
        measured["compiled_head"] = measured["twin"]
        memory = {v: m["peak_growth_mb"] for v, m in measured.items()}
        timing = _run_worker(__file__, "timing", *flags)

    baseline_name = "starVLA's QwenGR00T (build_framework)" if use_starvla else "QwenGR00T replica (no starVLA here)"
    print(f"\nTwinBrain vs {baseline_name}. VLM: Qwen2.5-VL-like, {MODEL['num_layers']} layers, hidden "
          f"{MODEL['hidden_size']}, {MODEL['num_heads']}/{MODEL['num_kv_heads']} heads, {IMAGE}x{IMAGE} image; "
          f"GR00T DiT-B head, {HEAD_LAYERS} layer; batch {BATCH} (inference 1); torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs; {time.time() - started:.0f} s")
    print(f"Tokenizer: {corpus_description()}")
    tok = timing["tokens"]
    print(f"Tokens per sample: QwenGR00T {tok[BASELINE]['vlm']:.0f}; TwinBrain Left {tok['twin']['left']:.0f} "
          f"(shared prefix {tok['twin'].get('left_shared_prefix', 0)}), Right {tok['twin']['right']:.0f} "
          f"(action_queries: {tok['action_queries']['right']:.0f})")
    base_mem = memory[BASELINE]
    header = f"{'':22}{'train ms':>9}{'ratio (range)':>18}{'infer ms':>10}{'ratio (range)':>18}{'mem MB':>8}{'ratio':>7}"
    print(header)
    for v in _variants(use_starvla):
        tr, inf = timing["train"].get(v, timing["train"]["twin"]), timing["infer"][v]
        print(f"{v:22}{tr['median_s'] * 1e3:9.0f}{tr['ratio']:7.2f} ({tr['ratio_min']:.2f}-{tr['ratio_max']:.2f})"
              f"{inf['median_s'] * 1e3:10.0f}{inf['ratio']:7.2f} ({inf['ratio_min']:.2f}-{inf['ratio_max']:.2f})"
              f"{memory[v]:8.0f}{memory[v] / base_mem:7.2f}")
    print("accuracy: " + "; ".join(f"{v}: {ACCURACY[v]}" for v in LEVERS))
    print("max action difference to twin (same weights, same noise): " +
          ", ".join(f"{v} {d:.1e}" for v, d in timing["action_difference"].items()))
    print_low_memory(measured)
    if args.json:
        args.json.write_text(json.dumps({"model": MODEL, "head_layers": HEAD_LAYERS, "batch": BATCH,
                                         "baseline": baseline_name, "tokenizer": corpus_description(),
                                         "memory_mb": memory, "low_memory": measured, "lora": LORA, **timing},
                                        indent=2))


def print_low_memory(measured: dict) -> None:
    names = (BASELINE, "twin", *LOW_MEMORY_VARIANTS)
    print(f"\nLow-memory training (each variant in its own process; ratio to {BASELINE}; LoRA r {LORA['r']})")
    print(f"{'':30}" + "".join(f"{n:>18}" for n in names))
    rows = (("peak_growth_mb", "peak training memory MB"), ("trainable_mb", "trainable parameters MB"),
            ("trainable_m", "trainable parameters (M)"), ("weights_mb", "weights held MB"),
            ("grads_adamw_mb", "gradients + AdamW MB"), ("checkpoint_mb", "checkpoint MB"))
    for key, label in rows:
        base = measured[BASELINE][key]
        print(f"{label:30}" + "".join(f"{measured[n][key]:11.1f} ({measured[n][key] / base:4.2f})" for n in names))


if __name__ == "__main__":
    main()
