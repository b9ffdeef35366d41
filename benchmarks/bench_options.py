"""What each TwinBrain inference option saves: one process, the variants timed in alternation (before/after).

    python benchmarks/bench_options.py [--json OUT.json] [--repeats 20]

Variants of the same policy as ``bench_policy.py`` (same weights), one action chunk for one observation:
- ``default``: each brain runs its own vision tower, eager head;
- ``freeze_right_vision``: the Right's tower is frozen, so the Left's image features serve both brains;
- ``compile_action_head``: the head's DiT through ``torch.compile`` (compiled in the warm-up rounds).
Median of ``--repeats`` rounds after two warm-up rounds. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_backbone import _alternate  # noqa: E402
from bench_policy import IMAGE, MODEL, _config, _examples  # noqa: E402

VARIANTS = {"default": {}, "freeze_right_vision": {"freeze_vision": True}, "compile_action_head": {"compile_head": True}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    import tempfile

    from starvla_twinbrain.framework.twinbrain import TwinBrain
    from starvla_twinbrain.tiny_vlm import make_tiny_vlm

    with tempfile.TemporaryDirectory() as tmp:
        vlm = str(make_tiny_vlm(Path(tmp) / "bench-Qwen2.5-VL", family="qwen2_5_vl", image_size=IMAGE, **MODEL))
        models = {}
        for name, options in VARIANTS.items():
            torch.manual_seed(0)
            cfg = _config(vlm, compile_head=options.get("compile_head", False),
                          freeze_vision=options.get("freeze_vision", False))
            models[name] = TwinBrain(cfg).eval()
        one = _examples(1)
        want = models["default"].predict_action(one, seed=0)["normalized_actions"]
        agree = {name: float(abs(m.predict_action(one, seed=0)["normalized_actions"] - want).max())
                 for name, m in models.items()}
        times = _alternate({name: (lambda m=m: m.predict_action(one)) for name, m in models.items()}, args.repeats)

    base = times["default"]
    print(f"\nTwinBrain inference, one chunk ({MODEL['hidden_size']}-wide {MODEL['num_layers']}-layer VLM, {IMAGE}x{IMAGE} "
          f"image, DiT-B head), torch {torch.__version__}, {torch.get_num_threads()} threads, medians of {args.repeats}")
    print(f"{'variant':24}{'ms':>8}{'vs default':>12}{'max |Δ action|':>16}")
    for name, seconds in times.items():
        print(f"{name:24}{seconds * 1e3:8.1f}{seconds / base:12.2f}{agree[name]:16.2e}")
    if args.json:
        args.json.write_text(json.dumps({"model": MODEL, "times_s": times, "max_action_difference": agree}, indent=2))


if __name__ == "__main__":
    main()
