#!/usr/bin/env bash
# The plugin path against a real starVLA checkout, on CPU (CI cannot install starVLA):
#   STARVLA_DIR=/path/to/starVLA STARVLA_PY=/path/to/venv/bin/python [STEPS=20] bash scripts/starvla_host_check.sh [WORK]
# STARVLA_PY: a Python with starVLA's requirements and this package installed (see ../README.md "starVLA").
# It runs tests/host; then starVLA's own commands, unmodified and without this package's launchers (the installed
# autoload hook registers TwinBrain): `accelerate launch ... starVLA/training/train_starvla.py` trains a tiny
# TwinBrain for STEPS steps (DeepSpeed ZeRO-2) with this repo's tiny config, with a stock-style one (no state,
# starVLA's stock learning-rate keys) and with LoRA + the int8 Left, on a dataset made by `starvla make-dataset`, and starVLA's
# `deployment/model_server/server_policy.py` serves each run to starVLA's websocket client. Then the same through
# this package's launchers (`starvla train`, `python -m starvla_twinbrain.host.starvla serve`, `starvla serve`),
# and the starVLA-trained checkpoint loads in the embedded runtime.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
: "${STARVLA_DIR:?set STARVLA_DIR to a starVLA checkout}" "${STARVLA_PY:?set STARVLA_PY to its Python}"
WORK=$(realpath -m "${1:-runs/starvla_host_check}")
export PYTHONPATH="$STARVLA_DIR${PYTHONPATH:+:$PYTHONPATH}" WANDB_MODE=disabled HF_HUB_OFFLINE=1
STEPS=${STEPS:-20}
TRAIN_ARGS=(--trainer.max_train_steps "$STEPS" --trainer.save_interval $((STEPS / 2)) --trainer.eval_interval $((STEPS / 2)))
mkdir -p "$WORK"

echo "== tests/host against $STARVLA_DIR"
"$STARVLA_PY" -m pytest -q tests/host

echo "== tiny VLM and LeRobot v3.0 dataset (the dataset needs lerobot: this project's .venv)"
[ -f "$WORK/models/tiny-Qwen2.5-VL/config.json" ] || "$STARVLA_PY" -m starvla_twinbrain.cli make-tiny-vlm "$WORK/models/tiny-Qwen2.5-VL"
[ -f "$WORK/data/synthetic/meta/info.json" ] || .venv/bin/starvla make-dataset "$WORK/data/synthetic" --episodes 8 --length 20
sed -e "s#base_vlm: runs/models/tiny-Qwen2.5-VL#base_vlm: $WORK/models/tiny-Qwen2.5-VL#" \
    -e "s#data_root_dir: runs/data#data_root_dir: $WORK/data#" -e "s#run_root_dir: runs#run_root_dir: $WORK#" \
    configs/tiny_cpu.yaml > "$WORK/tiny.yaml"

# starVLA's Bridge-style YAMLs: no state, learning rates for base / qwen_vl_interface / action_model, nothing frozen.
"$STARVLA_PY" - "$WORK/tiny.yaml" "$WORK/stock.yaml" <<'PY'
import sys
from omegaconf import OmegaConf
cfg = OmegaConf.load(sys.argv[1])
cfg.datasets.vla_data.include_state = False
cfg.trainer.learning_rate = {"base": 1.0e-4, "qwen_vl_interface": 1.0e-4, "action_model": 1.0e-3}
del cfg.trainer["freeze_modules"]
OmegaConf.save(cfg, sys.argv[2])
PY
# Low-memory training: LoRA on the Right Brain and the int8 Left (needs peft and torchao in $STARVLA_PY).
"$STARVLA_PY" - "$WORK/tiny.yaml" "$WORK/lowmem.yaml" <<'PY'
import sys
from omegaconf import OmegaConf
cfg = OmegaConf.load(sys.argv[1])
cfg.framework.twinbrain.right_lora = {"r": 8, "alpha": 16}
cfg.framework.twinbrain.left_precision = "int8"
OmegaConf.save(cfg, sys.argv[2])
PY

ACCELERATE="$(dirname "$STARVLA_PY")/accelerate"
for config in tiny stock lowmem; do
  echo "== starVLA's own train_starvla.py, unmodified, no launcher: $config.yaml"
  (cd "$STARVLA_DIR" && COLUMNS=250 "$ACCELERATE" launch --config_file starVLA/config/deepseeds/deepspeed_zero2.yaml --num_processes 1 \
      starVLA/training/train_starvla.py --config_yaml "$WORK/$config.yaml" --run_id "starvla_cmd_$config" "${TRAIN_ARGS[@]}" \
      --trainer.logging_frequency 1) 2>&1 | tee "$WORK/train_starvla_$config.log"
  echo "action_dit_loss, first and last logged step:" \
      $(grep -o "'action_dit_loss': [0-9.e+-]*" "$WORK/train_starvla_$config.log" | sed -n '1p;$p' | cut -d' ' -f2)
  grep -Eq "freeze_modules: .*left_brain" "$WORK/starvla_cmd_$config/config.yaml" \
    || { echo "starvla_cmd_$config/config.yaml: trainer.freeze_modules does not name left_brain"; exit 1; }
done
grep -Eq "freeze_modules: .*right_brain_frozen_base" "$WORK/starvla_cmd_lowmem/config.yaml" \
  || { echo "starvla_cmd_lowmem/config.yaml: trainer.freeze_modules does not name right_brain_frozen_base"; exit 1; }

echo "== starvla train (starVLA mode, this package's launcher) from the starVLA checkout"
(cd "$STARVLA_DIR" && "$STARVLA_PY" -m starvla_twinbrain.cli train --framework twinbrain --config "$WORK/tiny.yaml" \
    trainer.max_train_steps=$STEPS trainer.save_interval=$((STEPS / 2)) trainer.eval_interval=$((STEPS / 2)) run_id=starvla_mode)
CKPT="$WORK/starvla_mode/final_model/pytorch_model.pt"

echo "== the starVLA-trained checkpoint in the embedded runtime (.venv, no starVLA)"
PYTHONPATH= .venv/bin/python -c "
from starvla_twinbrain.framework.pretrained import load_framework
m = load_framework('$CKPT'); print('embedded load ok:', type(m.action_model).__name__, list(m.norm_stats))"

SERVERS=()
trap 'kill "${SERVERS[@]}" 2>/dev/null || true' EXIT
serve() {  # serve PORT LOG COMMAND...: start a server from the starVLA checkout
  local port=$1 log=$2; shift 2
  (cd "$STARVLA_DIR" && exec "$@") > "$log" 2>&1 &
  SERVERS+=($!)
}
ask() {  # ask PORT: one request with starVLA's own websocket client (it waits for the server to come up)
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

port=10095
for config in tiny stock lowmem; do
  echo "== starVLA's own server_policy.py, unmodified, no launcher, serving starvla_cmd_$config + its websocket client"
  serve $port "$WORK/server_policy_$config.log" \
      "$STARVLA_PY" deployment/model_server/server_policy.py --ckpt_path "$WORK/starvla_cmd_$config/final_model/pytorch_model.pt" --port $port
  ask $port
  port=$((port + 1))
done

echo "== starVLA's policy server through this package's launcher + its websocket client"
serve 10093 "$WORK/serve.log" "$STARVLA_PY" -m starvla_twinbrain.host.starvla serve --ckpt_path "$CKPT" --port 10093
ask 10093

echo "== starvla serve (this package's server, starVLA importable) + starVLA's websocket client"
serve 10094 "$WORK/starvla_serve.log" "$STARVLA_PY" -m starvla_twinbrain.cli serve --ckpt "$CKPT" --host 127.0.0.1 --port 10094
ask 10094
echo "starVLA host check: OK"
