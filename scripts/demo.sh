#!/usr/bin/env bash
# The main job on an embedded default, on CPU: make a tiny Qwen2.5-VL and a learnable LeRobot v3.0 dataset (no
# network), train TwinBrain on it with `starvla train` (configs/tiny_cpu.yaml), then load the final checkpoint and
# compare its predicted action chunks with the dataset's. Extra arguments are config overrides (key=value).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
S=.venv/bin/starvla
[ -f runs/models/tiny-Qwen2.5-VL/config.json ] || $S make-tiny-vlm runs/models/tiny-Qwen2.5-VL
[ -f runs/data/synthetic/meta/info.json ] || $S make-dataset runs/data/synthetic
$S train --framework twinbrain --config configs/tiny_cpu.yaml "$@"
.venv/bin/python examples/evaluate_checkpoint.py runs/tiny_cpu/final_model/pytorch_model.pt
