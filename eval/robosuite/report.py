"""Plot a robosuite run: training loss next to closed-loop success; print the summary line.

    python eval/robosuite/report.py runs/robosuite/robosuite_lift   (reads summary.jsonl and eval/results.json)

Writes RUN/eval/success_and_loss.png. Runs in the model's environment (matplotlib).
"""

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="the training run directory")
    args = parser.parse_args()
    rows = [json.loads(line) for line in (args.run / "summary.jsonl").read_text().splitlines() if line.strip()]
    results = json.loads((args.run / "eval" / "results.json").read_text())
    episodes = results["per_episode"]

    fig, (loss_ax, success_ax) = plt.subplots(1, 2, figsize=(10, 3.5))
    loss_ax.plot([r["step"] for r in rows], [r["action_loss"] for r in rows], lw=1)
    loss_ax.set(xlabel="step", ylabel="action_loss (flow matching)", yscale="log", title="training")
    loss_ax.grid(alpha=0.3)
    colours = ["tab:green" if e["success"] else "tab:red" for e in episodes]
    success_ax.bar(range(len(episodes)), [e["steps"] for e in episodes], color=colours)
    success_ax.axhline(results["horizon"], color="grey", ls="--", lw=1)
    success_ax.set(xlabel="evaluation episode", ylabel="steps (green: lifted, red: failed)",
                   title=f"{results['task']}: {results['successes']}/{results['episodes']} "
                         f"({100 * results['success_rate']:.0f}%)")
    fig.tight_layout()
    out = args.run / "eval" / "success_and_loss.png"
    fig.savefig(out, dpi=100)
    print(f"{results['task']}: success rate {results['successes']}/{results['episodes']} "
          f"({100 * results['success_rate']:.0f}%), final action_loss {rows[-1]['action_loss']:.4f}; plot: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
