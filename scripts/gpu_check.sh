#!/usr/bin/env bash
# The whole GPU path in one run (<= 8 min on one H200): benchmarks/gpu_check.py, whose docstring says what it checks.
#   scripts/gpu_check.sh [--out DIR] [--tiny] [...]     run from anywhere; results in DIR/gpu_check.json
# On a machine without network, packages it lacks travel as wheels in .whl/ (made by scripts/gpu_wheels.sh) and are
# installed here into a scratch folder first. Exit status: 0 all checks passed, 1 a check failed, 2 cannot run.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu_check_site .whl/*.whl
  export PYTHONPATH="/tmp/gpu_check_site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export CUBLAS_WORKSPACE_CONFIG=${CUBLAS_WORKSPACE_CONFIG:-:4096:8}   # deterministic cuBLAS for the resume check
exec "$PYTHON" benchmarks/gpu_check.py "$@"
