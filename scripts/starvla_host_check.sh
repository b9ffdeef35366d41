#!/usr/bin/env bash
# The plugin path against a real starVLA checkout, on CPU (CI cannot install starVLA):
#   STARVLA_DIR=/path/to/starVLA STARVLA_PY=/path/to/venv/bin/python bash scripts/starvla_host_check.sh [WORK]
# STARVLA_PY: a Python with starVLA's requirements and this package installed (see ../README.md "starVLA").
# It runs tests/host, trains a tiny TwinBrain for 20 steps through starVLA's own train_starvla.py (accelerate +
# DeepSpeed ZeRO-2) on a dataset made by `starvla make-dataset`, loads the result with the embedded runtime, serves
# it with starVLA's policy server and sends one request with starVLA's websocket client.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
: "${STARVLA_DIR:?set STARVLA_DIR to a starVLA checkout}" "${STARVLA_PY:?set STARVLA_PY to its Python}"
WORK=$(realpath -m "${1:-runs/starvla_host_check}")
export PYTHONPATH="$STARVLA_DIR${PYTHONPATH:+:$PYTHONPATH}" WANDB_MODE=disabled HF_HUB_OFFLINE=1
mkdir -p "$WORK"

echo "== tests/host against $STARVLA_DIR"
"$STARVLA_PY" -m pytest -q tests/host

echo "== tiny VLM and LeRobot v3.0 dataset (the dataset needs lerobot: this project's .venv)"
[ -f "$WORK/models/tiny-Qwen2.5-VL/config.json" ] || "$STARVLA_PY" -m starvla_twinbrain.cli make-tiny-vlm "$WORK/models/tiny-Qwen2.5-VL"
[ -f "$WORK/data/synthetic/meta/info.json" ] || .venv/bin/starvla make-dataset "$WORK/data/synthetic" --episodes 8 --length 20
sed -e "s#base_vlm: runs/models/tiny-Qwen2.5-VL#base_vlm: $WORK/models/tiny-Qwen2.5-VL#" \
    -e "s#data_root_dir: runs/data#data_root_dir: $WORK/data#" -e "s#run_root_dir: runs#run_root_dir: $WORK#" \
    configs/tiny_cpu.yaml > "$WORK/tiny.yaml"

echo "== starvla train (starVLA mode) from the starVLA checkout"
(cd "$STARVLA_DIR" && "$STARVLA_PY" -m starvla_twinbrain.cli train --framework twinbrain --config "$WORK/tiny.yaml" \
    trainer.max_train_steps=20 trainer.save_interval=10 trainer.eval_interval=10 run_id=starvla_mode)
CKPT="$WORK/starvla_mode/final_model/pytorch_model.pt"

echo "== the starVLA-trained checkpoint in the embedded runtime (.venv, no starVLA)"
PYTHONPATH= .venv/bin/python -c "
from starvla_twinbrain.runtime.checkpoint import load_framework
m = load_framework('$CKPT'); print('embedded load ok:', type(m.action_model).__name__, list(m.norm_stats))"

echo "== starVLA's policy server + its websocket client"
(cd "$STARVLA_DIR" && exec "$STARVLA_PY" -m starvla_twinbrain.starvla_host serve --ckpt_path "$CKPT" --port 10093) \
    > "$WORK/serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
ask() {  # ask PORT: one request with starVLA's own websocket client
  (cd "$STARVLA_DIR" && PORT=$1 "$STARVLA_PY" - <<'PY'
import os
import numpy as np
from deployment.model_server.tools.websocket_policy_client import WebsocketClientPolicy
client = WebsocketClientPolicy(host="127.0.0.1", port=int(os.environ["PORT"]))
print("metadata: action_chunk_size", client.get_server_metadata()["action_chunk_size"])
reply = client.predict_action({"examples": [{"image": [np.full((224, 224, 3), 235, np.uint8)],
                                             "lang": "move to the red square", "state": np.zeros((1, 7), np.float32)}]})
actions = np.asarray(reply["data"]["actions"])
assert reply["status"] == "ok" and actions.shape[-1] == 7 and np.isfinite(actions).all(), reply
print("reply:", reply["status"], "actions", actions.dtype, actions.shape)
client.close()
PY
  )
}
ask 10093

echo "== starvla serve (this package's server, starVLA importable) + starVLA's websocket client"
(cd "$STARVLA_DIR" && exec "$STARVLA_PY" -m starvla_twinbrain.cli serve --ckpt "$CKPT" --host 127.0.0.1 --port 10094) \
    > "$WORK/starvla_serve.log" 2>&1 &
SERVER2=$!
trap 'kill $SERVER $SERVER2 2>/dev/null || true' EXIT
ask 10094
echo "starVLA host check: OK"
