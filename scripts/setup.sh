#!/usr/bin/env bash
# Create .venv with the CPU stack and this package (editable).
#   VENV=path  where to create it (default .venv)
#   TRANSFORMERS="transformers==4.57.6"  pin another transformers line (starVLA pins 4.57)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3.11}
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
# torch first and pinned: on CPU machines 2.13.0 is the small CPU build; other torch>=2.4 work too.
"$VENV/bin/pip" install -q "${TORCH:-torch==2.13.0}"
"$VENV/bin/pip" install -q -e ".[test]" ${TRANSFORMERS:+"$TRANSFORMERS"}
"$VENV/bin/python" -c "import torch, transformers; print('ready:', '$VENV', 'torch', torch.__version__, 'transformers', transformers.__version__)"
