#!/usr/bin/env bash
# The bundled SimplerEnv Bridge evaluation against the real simulator, on CPU (CI cannot build SimplerEnv):
#   SIMPLER_ENV=ROOT/env.sh bash scripts/simpler_check.sh [WORK]
# SIMPLER_ENV: the env.sh of a SimplerEnv environment made by the CPU recipe (README "SimplerEnv on a CPU machine");
#   sourced here (software Vulkan + its venv on PATH). Or SIMPLER_PY: that environment's python, with the Vulkan
#   variables already set. PY: this project's python (default .venv/bin/python). CKPT: a checkpoint to serve
#   (default: a tiny untrained TwinBrain, made here with unnorm_key oxe_bridge, 7-d actions, 224x224 images; its
#   synthetic training actions are +-1, so its actions are scaled by ACTION_SCALE, default 0.02, to Bridge's
#   centimetres; with CKPT the default is 1, as starVLA runs). EPISODE_LENGTH: starvla (120 steps) | simpler_env.
#   UNNORM_KEY: the statistics key the client asks for (default oxe_bridge, starVLA's Bridge key).
#   DEVICE: the server's (default cpu). PORT: default 10095.
# It serves the checkpoint (saving every image it receives), runs one episode of each of the four Bridge tasks
# through `starvla eval simpler_env` (eval/simpler_env/run_bridge.py --record), and checks with
# eval/simpler_env/check_run.py: each episode ran to its step limit, the results files and table are complete, the
# images the server received are the 224x224 views the env rendered (not blank, transposed or flipped), and the end
# effector moved as commanded. Videos (camera | image sent + commanded action) and stills:
# WORK/record/<task>_run1_ep0.mp4, _still.png.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$(realpath -m "${1:-runs/simpler_check}")
PY=${PY:-$ROOT/.venv/bin/python}
PORT=${PORT:-10095}
EPISODE_LENGTH=${EPISODE_LENGTH:-starvla}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" WANDB_MODE=disabled HF_HUB_OFFLINE=1
if [ -n "${SIMPLER_ENV:-}" ]; then
  set +u; source "$SIMPLER_ENV"; set -u  # Vulkan variables, and its venv first on PATH
  SIMPLER_PY=$(command -v python)
fi
: "${SIMPLER_PY:?set SIMPLER_ENV to the env.sh of the SimplerEnv recipe, or SIMPLER_PY to its python}"
mkdir -p "$WORK"
rm -rf "$WORK/results" "$WORK/record" "$WORK/server_images"

if [ -z "${CKPT:-}" ]; then
  ACTION_SCALE=${ACTION_SCALE:-0.02}
  CKPT="$WORK/tiny_bridge/final_model/pytorch_model.pt"
  if [ ! -f "$CKPT" ]; then
    echo "== a tiny untrained checkpoint: tiny VLM, synthetic dataset named oxe_bridge, 20 training steps"
    [ -f "$WORK/models/tiny-Qwen2.5-VL/config.json" ] || "$PY" -m starvla_twinbrain.cli make-tiny-vlm "$WORK/models/tiny-Qwen2.5-VL"
    [ -f "$WORK/data/oxe_bridge/meta/info.json" ] || "$PY" -m starvla_twinbrain.cli make-dataset "$WORK/data/oxe_bridge" --episodes 8 --length 20
    "$PY" -m starvla_twinbrain.cli train --config configs/tiny_cpu.yaml run_root_dir="$WORK" run_id=tiny_bridge \
        framework.qwenvl.base_vlm="$WORK/models/tiny-Qwen2.5-VL" datasets.vla_data.data_root_dir="$WORK/data" \
        datasets.vla_data.data_mix=oxe_bridge datasets.vla_data.include_state=false \
        "datasets.vla_data.obs_image_size=[224,224]" trainer.max_train_steps=20 trainer.save_interval=20 \
        trainer.eval_interval=20
  fi
fi
ACTION_SCALE=${ACTION_SCALE:-1}

echo "== serving $CKPT on port $PORT (every request's image saved to $WORK/server_images)"
mkdir -p "$WORK/server_images"
"$PY" - "$CKPT" "$PORT" "$WORK/server_images" "${DEVICE:-cpu}" > "$WORK/serve.log" 2>&1 <<'PY' &
import itertools, sys
import numpy as np
from starvla_twinbrain.serving.policy import ServedPolicy
from starvla_twinbrain.serving.server import PolicyServer

ckpt, port, folder, device = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
policy = ServedPolicy.from_checkpoint(ckpt, device=device)
predict, count = policy.predict_action, itertools.count()

def saving_predict_action(examples=None, **kwargs):  # what the server decoded, before its own checks
    np.save(f"{folder}/{next(count):06d}.npy", examples[0]["image"][0])
    return predict(examples=examples, **kwargs)

policy.predict_action = saving_predict_action
print("metadata:", {k: policy.metadata[k] for k in ("action_dim", "action_chunk_size", "default_unnorm_key",
                                                    "training_obs_image_size")}, flush=True)
PolicyServer(policy, host="127.0.0.1", port=port).serve_forever()
PY
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT

echo "== one episode of each Bridge task: starvla eval simpler_env (eval/simpler_env/run_bridge.py), $EPISODE_LENGTH lengths"
start=$(date +%s)
"$PY" -m starvla_twinbrain.cli eval simpler_env --python "$SIMPLER_PY" --port "$PORT" -- --out "$WORK/results" \
    --record "$WORK/record" --episodes 1 --repeats 1 --episode-length "$EPISODE_LENGTH" --action-scale "$ACTION_SCALE" \
    --unnorm-key "${UNNORM_KEY:-oxe_bridge}"
echo "four episodes in $(( $(date +%s) - start )) s, with building the four envs; server $(grep -m1 '^metadata' "$WORK/serve.log")"

echo "== checks"
"$SIMPLER_PY" -m eval.simpler_env.check_run --results "$WORK/results" --record "$WORK/record" \
    --server-images "$WORK/server_images" --episode-length "$EPISODE_LENGTH"
ls "$WORK"/record/*.mp4
echo "SimplerEnv check: OK"
