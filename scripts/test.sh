#!/usr/bin/env bash
# The test command: the full suite on .venv (Python 3.12, transformers 5.x, lerobot), then again on
# .venv-tf457 (Python 3.11, transformers 4.57, starVLA's pin; the LeRobot tests skip there). Venvs are
# created on first use, .venv-sim too (robosuite, for the closed-loop tests through the policy server). Extra arguments go to pytest (e.g. -m "not slow").
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh
[ -x .venv-sim/bin/python ] || bash scripts/setup_sim.sh
.venv/bin/python -m pytest "$@"
[ -x .venv-tf457/bin/python ] || STACK=tf457 bash scripts/setup.sh
.venv-tf457/bin/python -m pytest "$@"
