"""Backbone cost: TwinBrain vs a single brain, and joint-attention backends. Ratios measured in one run.

    python benchmarks/bench_backbone.py [--json OUT.json] [--repeats 5]

1. Training step (forward + backward + AdamW step) and peak memory of the dual-brain backbone against a single
   brain (the same VLM as the Right Brain alone, stock attention, no Left) on the same batch and prompt. Times:
   both in one process, timed in alternation round by round, so that machine drift hits both alike. Peak memory:
   the process's peak RSS over its state before any model was loaded (weights + gradients + optimizer state +
   activations), each variant in its own subprocess.
2. Joint attention, eager reference vs sdpa, forward + backward at several sequence lengths (L_l = L_r = L/2),
   with 3B-like heads (16 query heads, 2 key/value heads, head dim 128).
Median of ``--repeats`` timed rounds after two warm-up rounds. This is a benchmark, not a test: no thresholds.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

MODEL = dict(hidden_size=512, num_layers=4, num_heads=8, num_kv_heads=2)
BATCH = 4
IMAGE = 112


def _rss_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() // 1024


def alternate_times(calls: dict, repeats: int, warmup: int = 2) -> dict[str, list[float]]:
    """Seconds of each call per round, the calls timed in alternation round by round, so machine drift hits all of
    them alike."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for round_ in range(warmup + repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def _alternate(calls: dict, repeats: int, warmup: int = 2) -> dict[str, float]:
    """Median time of each call (``alternate_times``)."""
    return {name: statistics.median(t) for name, t in alternate_times(calls, repeats, warmup).items()}


def _build(variant: str, vlm_path: str):
    """(model, forward, tokens) of one variant on the same batch. The single brain never loads a Left."""
    from PIL import Image

    from starvla_twinbrain.config import BackboneConfig
    from starvla_twinbrain.model.dual_brain import DualBrainBackbone
    from starvla_twinbrain.model.processing import family_of, load_processor
    from starvla_twinbrain.model.prompts import PromptBuilder
    from starvla_twinbrain.model.qwen_compat import load_vlm, vlm_core

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    images = [[Image.fromarray(torch.randint(0, 256, (IMAGE, IMAGE, 3), generator=g, dtype=torch.uint8).numpy())]
              for _ in range(BATCH)]
    langs = [f"pick up the object number {i} and place it in the basket" for i in range(BATCH)]
    if variant == "single":  # the same VLM as the Right Brain alone: stock attention, same Right prompt
        config = BackboneConfig(base_vlm=vlm_path)
        model = vlm_core(load_vlm(vlm_path, family_of(vlm_path), "sdpa"))
        _, right = PromptBuilder(load_processor(vlm_path), config.prompts)(images, langs, ["widowx"] * BATCH)
        tokens = {"right": int(right.input_ids.shape[1])}

        def forward():
            return model(**right.tensors, use_cache=False).last_hidden_state
    else:
        model = DualBrainBackbone(BackboneConfig(base_vlm=vlm_path, attn_implementation="sdpa"))
        inputs = model.prepare(images, langs, ["widowx"] * BATCH)
        tokens = {"left": int(inputs.left.input_ids.shape[1]), "right": int(inputs.right.input_ids.shape[1])}

        def forward():
            return model(inputs).hidden_states
    return model, forward, tokens


def _train_step(model, forward):
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def step():
        loss = forward().float().square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def _memory_worker(variant: str, vlm_path: str) -> dict:
    """One variant in a fresh process: peak RSS of training steps over the state before any model was loaded, so
    it counts weights, gradients, optimizer state and activations."""
    baseline = _rss_kb()
    model, forward, tokens = _build(variant, vlm_path)
    step = _train_step(model.train(), forward)
    for _ in range(3):
        step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_growth_mb": (peak - baseline) / 1024, "tokens": tokens}


def _timing_worker(vlm_path: str, repeats: int) -> dict:
    """Both variants in one process, timed in alternation: training steps, then no-grad forwards."""
    built = {variant: _build(variant, vlm_path) for variant in ("single", "twin")}
    steps = _alternate({v: _train_step(model.train(), forward) for v, (model, forward, _) in built.items()}, repeats)
    for model, _, _ in built.values():
        model.eval()
    with torch.no_grad():
        infer = _alternate({v: forward for v, (_, forward, _) in built.items()}, repeats)
    return {v: {"step_s": steps[v], "infer_s": infer[v]} for v in built}


def _run_worker(script: str, *args: str) -> dict:
    """``python script --worker ARGS`` in a fresh process; its last stdout line is the JSON result."""
    out = subprocess.run([sys.executable, script, "--worker", *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"worker {' '.join(args[:1])} failed (exit {out.returncode}):\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_attention(lengths, repeats: int) -> list[dict]:
    from starvla_twinbrain.model.asymot_attention import joint_attention_eager, joint_attention_sdpa
    from starvla_twinbrain.model.asymot_masks import joint_attention_mask

    rows = []
    n_q, n_kv, d = 16, 2, 128
    for length in lengths:
        l_l = l_r = length // 2
        g = torch.Generator().manual_seed(0)
        q = torch.randn(1, n_q, l_r, d, generator=g, requires_grad=True)
        k_l, v_l = (torch.randn(1, n_kv, l_l, d, generator=g) for _ in range(2))
        k_r, v_r = (torch.randn(1, n_kv, l_r, d, generator=g, requires_grad=True) for _ in range(2))
        left_valid = torch.ones(1, l_l, dtype=torch.bool)
        left_valid[:, : l_l // 8] = False  # some padding
        right_valid = torch.ones(1, l_r, dtype=torch.bool)

        def run(kernel):
            mask = joint_attention_mask(left_valid, right_valid)  # built once per forward, as in the model
            out = kernel(q, k_l, v_l, k_r, v_r, mask, d ** -0.5)
            out = out[0] if isinstance(out, tuple) else out
            out.sum().backward()

        times = _alternate({"eager": lambda: run(joint_attention_eager), "sdpa": lambda: run(joint_attention_sdpa)},
                           repeats)
        rows.append({"tokens": length, "eager_s": times["eager"], "sdpa_s": times["sdpa"],
                     "speedup": times["eager"] / times["sdpa"]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--worker", choices=["single", "twin", "timing"], help=argparse.SUPPRESS)
    parser.add_argument("--vlm", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "timing":
        print(json.dumps(_timing_worker(args.vlm, args.repeats)))
        return
    if args.worker:
        print(json.dumps(_memory_worker(args.worker, args.vlm)))
        return

    from starvla_twinbrain.tiny_vlm import make_tiny_vlm

    torch.set_num_threads(torch.get_num_threads())
    with tempfile.TemporaryDirectory() as tmp:
        vlm = str(make_tiny_vlm(Path(tmp) / "bench-Qwen2.5-VL", family="qwen2_5_vl", image_size=IMAGE, **MODEL))
        single, twin = _run_worker(__file__, "single", "--vlm", vlm), _run_worker(__file__, "twin", "--vlm", vlm)
        timing = _run_worker(__file__, "timing", "--vlm", vlm, "--repeats", str(args.repeats))
        single.update(timing["single"])
        twin.update(timing["twin"])
    attention = bench_attention(args.lengths, args.repeats)

    print(f"\nBackbone: Qwen2.5-VL-like, hidden {MODEL['hidden_size']}, {MODEL['num_layers']} layers, batch {BATCH}, "
          f"{IMAGE}x{IMAGE} image, tokens Left {twin['tokens']['left']} / Right {twin['tokens']['right']}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'':28}{'single':>10}{'twin':>10}{'ratio':>8}")
    for key, label, scale, unit in (("step_s", "train step (fwd+bwd+AdamW)", 1e3, "ms"),
                                    ("infer_s", "inference forward", 1e3, "ms"),
                                    ("peak_growth_mb", "peak training memory", 1, "MB")):
        ratio = twin[key] / single[key] if single[key] else float("nan")
        print(f"{label + ' ' + unit:28}{single[key] * scale:10.1f}{twin[key] * scale:10.1f}{ratio:8.2f}")
    print("\nJoint attention fwd+bwd (16 q heads, 2 kv heads, d 128):")
    print(f"{'tokens':>8}{'eager ms':>10}{'sdpa ms':>10}{'speedup':>9}")
    for row in attention:
        print(f"{row['tokens']:8d}{row['eager_s'] * 1e3:10.1f}{row['sdpa_s'] * 1e3:10.1f}{row['speedup']:9.2f}")
    if args.json:
        args.json.write_text(json.dumps({"model": MODEL, "batch": BATCH, "single": single, "twin": twin,
                                         "attention": attention}, indent=2))


if __name__ == "__main__":
    main()
