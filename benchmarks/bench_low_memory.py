"""What the int8 Left costs (``framework.twinbrain.left_precision: int8``), and what LoRA costs at init: the same
TwinBrain (same seed, same weights) with the Left as the precision policy stores it and with the Left int8.

    python benchmarks/bench_low_memory.py [--json OUT.json]

For the tiny test models and the small benchmark model of bench_policy.py (both families): the Right Brain's final
hidden states and the predicted actions (fixed noise) of a batch of 4, max / mean absolute and normwise relative
difference; the Left's bytes (int8 counted as int8 data + scales) and what that saves. On CPU the reference Left is
fp32 (the precision policy's CPU setting); on a GPU it is the bf16 Left. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_policy import MODEL, _config, _examples  # noqa: E402

SIZES = {"tiny": {}, "bench": MODEL}


def measure(vlm: str) -> dict:
    from starvla_twinbrain.framework.twinbrain import TwinBrain
    from starvla_twinbrain.model.low_memory import module_bytes

    batch = _examples(4)
    runs = {}
    for precision in ("bf16", "int8"):
        torch.manual_seed(0)
        model = TwinBrain(_config(vlm, False, False, left_precision=precision)).eval()
        with torch.no_grad():
            inputs = model.backbone.prepare([ex["image"] for ex in batch], [ex["lang"] for ex in batch],
                                            states=[ex["state"] for ex in batch])
            hidden = model.backbone(inputs).hidden_states
        runs[precision] = {"hidden": hidden, "actions": torch.from_numpy(model.predict_action(batch, seed=0)["normalized_actions"]),
                           "left_bytes": module_bytes(model.left_brain), "precision": model.left_precision}
    ref, q = runs["bf16"], runs["int8"]
    out = {"reference_left": ref["precision"], "left_mb": ref["left_bytes"] / 2**20,
           "int8_left_mb": q["left_bytes"] / 2**20}
    for key in ("hidden", "actions"):
        diff = (q[key] - ref[key]).abs()
        out[key] = {"max": float(diff.max()), "mean": float(diff.mean()), "ref_max": float(ref[key].abs().max()),
                    "normwise_rel": float((q[key] - ref[key]).norm() / ref[key].norm())}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from starvla_twinbrain.tiny_vlm import make_tiny_vlm

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for family in ("qwen2_5_vl", "qwen3_vl"):
            for size, shape in SIZES.items():
                vlm = make_tiny_vlm(Path(tmp) / f"{size}-{family}", family=family, seed=0, image_size=112, **shape)
                results[f"{family} {size}"] = measure(str(vlm))
    print(f"\nint8 Left against the {next(iter(results.values()))['reference_left']} Left (torch {torch.__version__})")
    print(f"{'model':22}{'hidden max':>12}{'mean':>10}{'rel':>10}{'actions max':>13}{'mean':>10}{'rel':>10}"
          f"{'Left MB':>9}{'int8 MB':>9}{'saved':>7}")
    for name, r in results.items():
        h, a = r["hidden"], r["actions"]
        print(f"{name:22}{h['max']:12.2e}{h['mean']:10.2e}{h['normwise_rel']:10.2e}{a['max']:13.2e}{a['mean']:10.2e}"
              f"{a['normwise_rel']:10.2e}{r['left_mb']:9.1f}{r['int8_left_mb']:9.1f}"
              f"{1 - r['int8_left_mb'] / r['left_mb']:7.0%}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
