#!/usr/bin/env bash
# Create a virtual environment with this package (editable) and its test tools.
#   default          .venv on Python 3.12: torch, transformers 5.x, lerobot[dataset]==0.6.1 (LeRobot v3.0 data),
#                    and lerobot_policy_twinbrain (editable; the LeRobot policy plugin in its own subfolder)
#   STACK=tf457      .venv-tf457 on Python 3.11: torch 2.13 CPU build, transformers 4.57.6 (starVLA's pin), no lerobot
#   VENV=path        where to create it;  PYTHON=...  which interpreter
# Both stacks get the lowmem extra (peft, torchao: LoRA Right Brain, int8 Left) so that its tests run in CI.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/find_python.sh

STACK=${STACK:-main}
if [ "$STACK" = tf457 ]; then
  VENV=${VENV:-.venv-tf457}
  PYTHON=${PYTHON:-$(find_python 3.11)}
  EXTRAS="test,lowmem"
  PINS=("torch==2.13.0" "transformers==4.57.6")   # 2.13.0: the small CPU build on these machines
else
  VENV=${VENV:-.venv}
  PYTHON=${PYTHON:-$(find_python 3.12 || true)}
  EXTRAS="test,lerobot,lowmem"
  PINS=()
  PLUGINS=(-e ./lerobot_policy_twinbrain)   # TwinBrain as a LeRobot policy: lerobot-train --policy.type=twinbrain
  if [ -z "$PYTHON" ]; then  # lerobot 0.6 needs Python >= 3.12; without it the LeRobot tests skip
    echo "setup: no Python 3.12 found; installing on 3.11 without lerobot (LeRobot data tests will skip)" >&2
    PYTHON=$(find_python 3.11); EXTRAS="test,lowmem"; PINS=("torch==2.13.0"); PLUGINS=()
  fi
fi

echo "setup: $VENV with $("$PYTHON" --version) ($PYTHON), extras [$EXTRAS] ${PINS[*]:-}"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
# Resolved in one go so that the transformers pin and huggingface-hub agree.
"$VENV/bin/pip" install -q ${PINS[@]+"${PINS[@]}"} -e ".[$EXTRAS]" ${PLUGINS[@]+"${PLUGINS[@]}"}
"$VENV/bin/python" -c "import torch, transformers; print('ready:', '$VENV', 'torch', torch.__version__, 'transformers', transformers.__version__)"
