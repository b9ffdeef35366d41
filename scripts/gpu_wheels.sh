#!/usr/bin/env bash
# Wheels of what scripts/gpu_check.sh needs and the lent GPU machine lacks (Python 3.12, no network there), into
# .whl/ (git-ignored); carry .whl with the device tool. Versions: those of $PYTHON (default .venv, made by setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
# omegaconf and diffusers are pure Python: the py3-none-any wheels serve any platform. Their other requirements
# (PyYAML, filelock, huggingface-hub, regex, requests, safetensors, Pillow) are on that machine; diffusers reads
# importlib.metadata on Python >= 3.8, so importlib-metadata is not needed. peft (pure Python; psutil, PyYAML, tqdm
# there) and torchao (its int8 weight-only path is plain PyTorch) serve the low-memory rows.
"$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl \
  "omegaconf==$("$PYTHON" -c 'import omegaconf; print(omegaconf.__version__)')" \
  "diffusers==$("$PYTHON" -c 'import diffusers; print(diffusers.__version__)')" \
  "peft==$("$PYTHON" -c 'import peft; print(peft.__version__)')" \
  "torchao==$("$PYTHON" -c 'import torchao; print(torchao.__version__)')"
ls -la .whl
