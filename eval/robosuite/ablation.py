"""Run variants of the robosuite Lift demo on the same demonstrations and tabulate them (the model's venv).

    python eval/robosuite/ablation.py run [--variants state_right,state_head,...] [--out runs/ablation]
        [--episodes 50] [--steps 1000] [--demos 50] [--eval-seed 1000] [--set KEY=VALUE ...] [--dry-run]
    python eval/robosuite/ablation.py summarize [--out runs/ablation] [--json docs/robosuite_ablation.json]

Each variant is one `eval/robosuite/run.sh` call with VARIANT=<name> and its training overrides; run.sh records
the demonstrations and the dataset once in OUT and reuses them, so the variants differ only in the overrides (same
data, same training seed, same evaluation seeds). Every other setting is configs/robosuite_lift.yaml's (the demo's,
`time_distribution: beta` included). `summarize` reads OUT/<variant>/eval/results.json (stats.py record adds the
provenance) and writes OUT/summary.json and OUT/summary.md; `--json` also writes the JSON elsewhere.
"""

import argparse
import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import stats  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
RUN_SH = ROOT / "eval" / "robosuite" / "run.sh"

# name -> (training overrides, what it tests). `asymmetric` cross-attention is the default (the paper's AsyMoT), so
# state_right is also the asymmetric side of the cross-attention comparison.
VARIANTS = {
    "state_right": (["framework.twinbrain.state_into=right"], "state into the Right Brain (paper)"),
    "state_head": (["framework.twinbrain.state_into=head"], "state into the action head only"),
    "state_both": (["framework.twinbrain.state_into=both"], "state into both (the demo's config)"),
    "xattn_none": (["framework.twinbrain.state_into=right", "framework.twinbrain.cross_attention=none"],
                   "no Left→Right cross-attention, state into the Right Brain"),
}
COMPARISONS = {
    "state path": ["state_right", "state_head", "state_both"],
    "cross-attention (state into the Right Brain)": ["xattn_none", "state_right"],
}
LABELS = {"state_right": "state_into: right (cross_attention: asymmetric)", "state_head": "state_into: head",
          "state_both": "state_into: both", "xattn_none": "cross_attention: none (state_into: right)"}


def parse_variants(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or not names:
        raise SystemExit(f"--variants: unknown {unknown or text!r}; expected a comma-separated subset of "
                         f"{', '.join(VARIANTS)}")
    return names


def commands(args) -> list[tuple[str, dict, list[str]]]:
    """(variant, environment, argv) for each run.sh call."""
    try:
        extra = stats.check_overrides(args.set)
    except ValueError as e:
        raise SystemExit(f"--set: {e}")
    for name, value in [("--episodes", args.episodes), ("--steps", args.steps), ("--demos", args.demos)]:
        if value < 1:
            raise SystemExit(f"{name}: expected a positive count, got {value}")
    out = []
    for v in parse_variants(args.variants):
        env = {"OUT": str(args.out), "VARIANT": v, "DEMOS": str(args.demos), "EPISODES": str(args.episodes),
               "STEPS": str(args.steps), "EVAL_SEED": str(args.eval_seed), "PORT": str(args.port)}
        out.append((v, env, ["bash", str(args.runner), *VARIANTS[v][0], *extra]))
    return out


def run(args) -> int:
    failed = []
    for v, env, argv in commands(args):
        shown = " ".join(f"{k}={env[k]}" for k in ("OUT", "VARIANT", "DEMOS", "EPISODES", "STEPS", "EVAL_SEED"))
        print(f"== {v}: {shown} {' '.join(argv)}", flush=True)
        if args.dry_run:
            continue
        rc = subprocess.call(argv, cwd=ROOT, env={**os.environ, **env})
        if rc:
            print(f"== {v}: run.sh exited {rc}", flush=True)
            failed.append(v)
    if not args.dry_run:
        summarize(args.out, args.json)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def rooted(out: Path) -> Path:
    """OUT as run.sh sees it: relative paths are taken from the repository root (run.sh runs there)."""
    return out if out.is_absolute() else ROOT / out


def load(out: Path) -> dict[str, dict]:
    out = rooted(out)
    found = {}
    for v in VARIANTS:
        path = out / v / "eval" / "results.json"
        if path.is_file():
            found[v] = json.loads(path.read_text())
    return found


def row(v: str, r: dict) -> dict:
    low, high = stats.wilson(int(r["successes"]), int(r["episodes"]))
    if "variant" not in r:  # evaluate.py ran but stats.py record did not: the table would lack the provenance
        raise SystemExit(f"{v}: results.json has no provenance (eval/robosuite/stats.py record was not run)")
    return {"variant": v, "label": LABELS[v], "overrides": r["overrides"], "successes": int(r["successes"]),
            "episodes": int(r["episodes"]), "success_rate": r["successes"] / r["episodes"],
            "wilson_95": [round(low, 4), round(high, 4)], "training_seed": r["training_seed"],
            "evaluation_seeds": [min(r["evaluation_seeds"]), max(r["evaluation_seeds"])],
            "train_steps": r["train_steps"], "demonstrations": r["demonstrations"], "commit": r["commit"],
            "command": r["command"], "date": r.get("date")}


def summarize(out: Path, json_path: Path | None = None) -> dict:
    results = load(out)
    rows = {v: row(v, r) for v, r in results.items()}
    comparisons = []
    for name, members in COMPARISONS.items():
        present = [m for m in members if m in rows]
        if len(present) < 2:
            continue
        intervals = [rows[m]["wilson_95"] for m in present]
        all_overlap = all(stats.overlap(a, b) for i, a in enumerate(intervals) for b in intervals[i + 1:])
        comparisons.append({"comparison": name, "variants": present, "intervals_overlap": all_overlap})
    summary = {"generated": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
               "confidence": "Wilson score interval, 95 %", "variants": list(rows.values()),
               "comparisons": comparisons}
    text = json.dumps(summary, indent=2) + "\n"
    out = rooted(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(text)
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(text)
    (out / "summary.md").write_text(markdown(summary))
    print(markdown(summary))
    return summary


def markdown(summary: dict) -> str:
    lines = ["| Variant | Successes | Rate | Wilson 95 % | Training seed | Evaluation seeds |",
             "|---|---|---|---|---|---|"]
    for r in summary["variants"]:
        lo, hi = r["wilson_95"]
        s0, s1 = r["evaluation_seeds"]
        lines.append(f"| `{r['variant']}`: {r['label']} | {r['successes']}/{r['episodes']} | "
                     f"{100 * r['success_rate']:.0f} % | {100 * lo:.0f}–{100 * hi:.0f} % | {r['training_seed']} | "
                     f"{s0}–{s1} |")
    for c in summary["comparisons"]:
        verdict = "intervals overlap" if c["intervals_overlap"] else "some intervals do not overlap"
        lines.append(f"\n{c['comparison']}: {', '.join(c['variants'])}: {verdict}.")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="train and evaluate the variants one after another, then summarize")
    r.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from {', '.join(VARIANTS)}")
    r.add_argument("--out", type=Path, default=Path("runs/ablation"))
    r.add_argument("--episodes", type=int, default=50)
    r.add_argument("--steps", type=int, default=1000)
    r.add_argument("--demos", type=int, default=50)
    r.add_argument("--eval-seed", type=int, default=1000, help="episode i of every variant uses this + i")
    r.add_argument("--port", type=int, default=10093)
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="an extra training override for every variant (repeatable)")
    r.add_argument("--json", type=Path, default=None, help="also write the summary JSON here")
    r.add_argument("--dry-run", action="store_true", help="print the run.sh calls only")
    r.add_argument("--runner", type=Path, default=RUN_SH, help=argparse.SUPPRESS)  # tests: a fake run.sh
    s = sub.add_parser("summarize", help="tabulate OUT/<variant>/eval/results.json")
    s.add_argument("--out", type=Path, default=Path("runs/ablation"))
    s.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if args.cmd == "run":
        return run(args)
    summarize(args.out, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
