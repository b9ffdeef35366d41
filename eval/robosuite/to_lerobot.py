"""Recorded robosuite episodes (``collect.py``'s ``episode_*.npz``) → a LeRobot v3.0 dataset, written by lerobot.

    python eval/robosuite/to_lerobot.py runs/robosuite/demos runs/robosuite/data/robosuite_lift

Runs in the model's environment (lerobot needs numpy >= 2, the simulator's needs < 2, hence the hand-over).
"""

import argparse
import sys
from pathlib import Path

import numpy as np

from starvla_twinbrain.runtime.synthetic import write_lerobot_dataset

FPS = 20  # robosuite control_freq in lift.make_env


def episodes(folder: Path):
    for path in sorted(folder.glob("episode_*.npz")):
        with np.load(path) as ep:
            yield {"image": ep["image"], "state": ep["state"], "action": ep["action"], "task": str(ep["task"])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("episodes", type=Path, help="folder of episode_*.npz")
    parser.add_argument("out", type=Path, help="dataset folder to create (its name is the data_mix)")
    args = parser.parse_args()
    if not list(args.episodes.glob("episode_*.npz")):
        sys.exit(f"{args.episodes}: no episode_*.npz files (run eval/robosuite/collect.py first)")
    if args.out.exists():
        sys.exit(f"{args.out} exists: remove it first (LeRobot datasets are written once)")
    write_lerobot_dataset(args.out, episodes(args.episodes), fps=FPS, robot_type="panda")
    print(f"LeRobot v3.0 dataset written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
