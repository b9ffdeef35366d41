#!/usr/bin/env bash
# The main job on CPU, end to end, with no network: robosuite Lift with a Panda (eval/robosuite/run.sh).
# Scripted demonstrations → LeRobot v3.0 dataset → `starvla train` (a tiny Qwen2.5-VL made locally) → `starvla
# serve` → closed-loop episodes from the simulator's own environment → success rate, videos, plot.
# Sizes: DEMOS=50 EPISODES=20 STEPS=1000 (environment variables); output in runs/robosuite.
set -euo pipefail
cd "$(dirname "$0")/.."
exec bash eval/robosuite/run.sh
