#!/usr/bin/env bash
# The test command: the full suite on .venv (transformers 5.x), then again on
# transformers 4.57 (starVLA's pin) in .venv-tf457, created on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh
.venv/bin/python -m pytest "$@"
[ -x .venv-tf457/bin/python ] || VENV=.venv-tf457 TRANSFORMERS="transformers==4.57.6" bash scripts/setup.sh
.venv-tf457/bin/python -m pytest "$@"
