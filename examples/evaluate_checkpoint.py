"""Load a trained TwinBrain run and measure how well it predicts its dataset's action chunks.

    python examples/evaluate_checkpoint.py RUN/final_model/pytorch_model.pt [--samples 64]

Prints the mean absolute error of the predicted chunks (normalised space) against the data, next to the error of
always predicting the mean action (zero after normalisation), and asks the Left Brain, the unchanged base VLM,
about an image.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from omegaconf import OmegaConf

from starvla_twinbrain.framework.pretrained import load_framework, run_dir_of
from starvla_twinbrain.runtime.trainer import dataset_from_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()

    model = load_framework(args.checkpoint).eval()
    cfg = OmegaConf.load(run_dir_of(args.checkpoint) / "config.yaml")
    dataset, _ = dataset_from_config(cfg)
    index = np.linspace(0, len(dataset) - 1, min(args.samples, len(dataset))).astype(int)
    errors, baseline = [], []
    torch.manual_seed(0)
    for start in range(0, len(index), args.batch):
        batch = [dataset[int(i)] for i in index[start:start + args.batch]]
        pred = model.predict_action(batch)["normalized_actions"]
        truth = np.stack([np.asarray(ex["action"], dtype=np.float32) for ex in batch])
        errors.append(np.abs(pred - truth).mean(axis=(1, 2)))
        baseline.append(np.abs(truth).mean(axis=(1, 2)))
    err, base = float(np.concatenate(errors).mean()), float(np.concatenate(baseline).mean())
    print(f"action chunks on {len(index)} samples: mean |error| {err:.3f} (normalised), "
          f"predicting the mean action: {base:.3f} -> {100 * (1 - err / base):.0f}% lower")
    image = dataset[int(index[0])]["image"][0]
    answer = model.chat([image], "What colour is the square?", max_new_tokens=8)
    print(f"Left Brain (the base VLM, random weights in this demo) answers: {answer!r}")


if __name__ == "__main__":
    main()
