#!/usr/bin/env bash
# robosuite Lift, end to end on CPU: scripted demonstrations → LeRobot v3.0 dataset → `starvla train` (tiny VLM)
# → `starvla serve` → closed-loop evaluation from the simulator's own environment → success rate, videos, plot.
#   DEMOS=50 EPISODES=20 STEPS=1000 PORT=10093 OUT=runs/robosuite bash eval/robosuite/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
DEMOS=${DEMOS:-50}; EPISODES=${EPISODES:-20}; STEPS=${STEPS:-1000}; PORT=${PORT:-10093}; OUT=${OUT:-runs/robosuite}
export MUJOCO_GL=${MUJOCO_GL:-egl} HF_HUB_OFFLINE=1
RUN=$OUT/robosuite_lift
TIMES=()
stage() {  # stage NAME COMMAND...: run it, remember how long it took
  local name=$1 start=$SECONDS; shift
  echo "== $name"
  "$@"
  TIMES+=("$name $((SECONDS - start)) s")
}

stage "set up the model env (.venv)" bash -c '[ -x .venv/bin/python ] || bash scripts/setup.sh'
stage "set up the simulator env (.venv-sim)" bash scripts/setup_sim.sh
rm -rf "$OUT/demos" "$OUT/data" "$RUN"
stage "record $DEMOS expert demonstrations" .venv-sim/bin/python eval/robosuite/collect.py "$OUT/demos" --episodes "$DEMOS"
stage "write the LeRobot v3.0 dataset" .venv/bin/python eval/robosuite/to_lerobot.py "$OUT/demos" "$OUT/data/robosuite_lift"
[ -d "$OUT/models/tiny-Qwen2.5-VL" ] || .venv/bin/starvla make-tiny-vlm "$OUT/models/tiny-Qwen2.5-VL"
stage "train $STEPS steps" .venv/bin/starvla train --framework twinbrain --config configs/robosuite_lift.yaml \
  run_root_dir="$OUT" framework.qwenvl.base_vlm="$OUT/models/tiny-Qwen2.5-VL" \
  datasets.vla_data.data_root_dir="$OUT/data" trainer.max_train_steps="$STEPS"

.venv/bin/starvla serve --ckpt "$RUN/final_model/pytorch_model.pt" --host 127.0.0.1 --port "$PORT" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
stage "evaluate $EPISODES episodes through the server" .venv-sim/bin/python eval/robosuite/evaluate.py \
  --port "$PORT" --episodes "$EPISODES" --out "$RUN/eval"
kill $SERVER 2>/dev/null || true

.venv/bin/python eval/robosuite/report.py "$RUN"
printf '%s\n' "${TIMES[@]}" | sed 's/^/  /'
