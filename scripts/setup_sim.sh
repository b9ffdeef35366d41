#!/usr/bin/env bash
# Create .venv-sim for the robosuite benchmark (eval/robosuite): the simulator client, no torch.
# A venv of its own because robosuite 1.5.2 pulls mink, which pins numpy<2, and needs mujoco 3.8.1
# (newer mujoco trips an assertion inside robosuite). Rendering runs headless with MUJOCO_GL=egl.
#   VENV=path  where to create it;  PYTHON=...  which interpreter (default: a Python 3.11)
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/find_python.sh

VENV=${VENV:-.venv-sim}
export MUJOCO_GL=${MUJOCO_GL:-egl}
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import robosuite" >/dev/null 2>&1; then
  echo "setup_sim: $VENV already has robosuite; nothing to do"
  exit 0
fi

PYTHON=${PYTHON:-$(find_python 3.11)}
echo "setup_sim: $VENV with $("$PYTHON" --version) ($PYTHON)"
start=$SECONDS
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q "robosuite==1.5.2" "mujoco==3.8.1" "numpy<2" \
  websockets msgpack imageio imageio-ffmpeg pillow tqdm
# This package without its torch stack, so starvla_twinbrain.serving.client imports here.
"$VENV/bin/pip" install -q --no-deps -e .
"$VENV/bin/python" -c "import robosuite, mujoco, numpy; print('ready:', '$VENV', 'robosuite', robosuite.__version__, 'mujoco', mujoco.__version__, 'numpy', numpy.__version__)"
echo "setup_sim: done in $((SECONDS - start)) s"
