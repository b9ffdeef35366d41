"""Success-rate statistics and run provenance for the robosuite benchmark (standard library only, so it imports in
both .venv-sim and the model's venv).

    python eval/robosuite/stats.py record RUN --variant NAME --commit SHA --steps 1000 --demos 50 -- KEY=VALUE ...

`record` adds to RUN/eval/results.json (written by evaluate.py) what a reader needs to reproduce the figure: the
variant, the training overrides, the training seed (from RUN/config.yaml, the config the run trained with), the
evaluation seeds, the commit, the command, and the Wilson 95 % score interval of the success rate.
"""

import argparse
import json
import math
import operator
import os
import re
import sys
from datetime import datetime, timezone
from pathlib import Path

Z95 = 1.959963984540054  # the standard normal's 97.5 % quantile


def wilson(successes: int, episodes: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (Wilson 1927; Newcombe 1998, method 3, no continuity
    correction). Unlike the normal approximation it stays inside [0, 1] and is not degenerate at 0/n or n/n."""
    try:
        successes, episodes = operator.index(successes), operator.index(episodes)
    except TypeError:
        raise TypeError(f"wilson: expected integer successes and episodes, got {successes!r}, {episodes!r}") from None
    if episodes <= 0 or not 0 <= successes <= episodes:
        raise ValueError(f"wilson: expected 0 <= successes <= episodes and episodes > 0, got {successes}/{episodes}")
    p = successes / episodes
    z2n = z * z / episodes
    centre = (p + z2n / 2) / (1 + z2n)
    half = z / (1 + z2n) * math.sqrt(p * (1 - p) / episodes + z2n / (4 * episodes))
    # at 0/n and n/n the bound is exactly 0 or 1; floating point would leave ~1e-17
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == episodes else min(1.0, centre + half)
    return low, high


def overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


_OVERRIDE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*=.*$")


def check_overrides(overrides: list[str]) -> list[str]:
    """OmegaConf dotlist entries as `starvla train` takes them: KEY=VALUE with a dotted key."""
    for o in overrides:
        if not _OVERRIDE.match(o):
            raise ValueError(f"override {o!r}: expected KEY=VALUE with a dotted config key, "
                             "e.g. framework.twinbrain.state_into=right")
    return list(overrides)


def training_seed(run: Path, overrides: list[str]) -> int | None:
    """The seed the run trained with: `seed:` in RUN/config.yaml (the trainer writes the merged config there);
    failing that the last `seed=` override; else None (unknown, said so in the results rather than guessed)."""
    config = run / "config.yaml"
    if config.is_file():
        for line in config.read_text().splitlines():
            m = re.match(r"^seed:\s*(-?\d+)\s*$", line)
            if m:
                return int(m.group(1))
    seeds = [o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] == "seed"]
    return int(seeds[-1]) if seeds else None


def command_line(variant: str, out: str, demos: int, episodes: int, steps: int, eval_seed: int,
                 overrides: list[str]) -> str:
    env = f"OUT={out} VARIANT={variant} DEMOS={demos} EPISODES={episodes} STEPS={steps} EVAL_SEED={eval_seed}"
    if os.environ.get("OMP_NUM_THREADS"):  # torch's thread count changes the float sums, so it is part of the recipe
        env = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} {env}"
    return " ".join([env, "bash eval/robosuite/run.sh", *overrides])


def record(run: Path, variant: str, commit: str, steps: int, demos: int, overrides: list[str]) -> dict:
    path = run / "eval" / "results.json"
    results = json.loads(path.read_text())
    episodes, successes = int(results["episodes"]), int(results["successes"])
    eval_seeds = [int(e["seed"]) for e in results["per_episode"]]
    low, high = wilson(successes, episodes)
    results.update({
        "variant": variant,
        "overrides": check_overrides(overrides),
        "training_seed": training_seed(run, overrides),
        "evaluation_seeds": eval_seeds,
        "train_steps": steps,
        "demonstrations": demos,
        "commit": commit,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "wilson_95": [round(low, 4), round(high, 4)],
        "command": command_line(variant, str(run.parent), demos, episodes, steps, eval_seeds[0] if eval_seeds else
                                int(results.get("seed", 1000)), overrides),
    })
    path.write_text(json.dumps(results, indent=2))
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record", help="add provenance and the Wilson interval to RUN/eval/results.json; the "
                       "run's KEY=VALUE training overrides follow --")
    r.add_argument("run", type=Path)
    r.add_argument("--variant", required=True)
    r.add_argument("--commit", default="unknown")
    r.add_argument("--steps", type=int, required=True)
    r.add_argument("--demos", type=int, required=True)
    w = sub.add_parser("wilson", help="print the Wilson 95 %% interval of SUCCESSES/EPISODES")
    w.add_argument("successes", type=int)
    w.add_argument("episodes", type=int)
    # the overrides follow `--` (split here: argparse assigns a trailing nargs="*" positional before it sees them)
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    args = p.parse_args(argv)
    if args.cmd == "wilson":
        low, high = wilson(args.successes, args.episodes)
        print(f"{args.successes}/{args.episodes}: {args.successes / args.episodes:.3f} [{low:.3f}, {high:.3f}]")
        return 0
    try:
        res = record(args.run, args.variant, args.commit, args.steps, args.demos, overrides)
    except ValueError as e:
        raise SystemExit(f"stats.py record: {e}")
    low, high = res["wilson_95"]
    print(f"{args.variant}: {res['successes']}/{res['episodes']} ({100 * res['success_rate']:.0f}%), "
          f"Wilson 95 % [{100 * low:.0f}%, {100 * high:.0f}%], training seed {res['training_seed']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
