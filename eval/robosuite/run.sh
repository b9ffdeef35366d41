#!/usr/bin/env bash
# robosuite Lift, end to end on CPU: scripted demonstrations → LeRobot v3.0 dataset → `starvla train` (tiny VLM)
# → `starvla serve` → closed-loop evaluation from the simulator's own environment → success rate, videos, plot.
#   DEMOS=50 EPISODES=20 STEPS=1000 PORT=10093 OUT=runs/robosuite bash eval/robosuite/run.sh [KEY=VALUE ...]
# Arguments are OmegaConf overrides for `starvla train` (after the script's own, so they win); VARIANT names the
# run (OUT/VARIANT, default robosuite_lift). The demonstrations and the dataset in OUT are reused when OUT holds
# exactly DEMOS of them (FRESH=1 records them again), so variants train on the same data:
#   VARIANT=state_right EPISODES=50 bash eval/robosuite/run.sh framework.twinbrain.state_into=right
# (eval/robosuite/ablation.py runs a set of variants like this and tabulates them.)
set -euo pipefail
cd "$(dirname "$0")/../.."
DEMOS=${DEMOS:-50}; EPISODES=${EPISODES:-20}; STEPS=${STEPS:-1000}; PORT=${PORT:-10093}; OUT=${OUT:-runs/robosuite}
EVAL_SEED=${EVAL_SEED:-1000}; VARIANT=${VARIANT:-robosuite_lift}; FRESH=${FRESH:-0}
export MUJOCO_GL=${MUJOCO_GL:-egl} HF_HUB_OFFLINE=1
case $VARIANT in ""|*/*|.*) echo "VARIANT: expected a plain directory name, got '$VARIANT'" >&2; exit 2 ;; esac
OVERRIDES=("$@")
for o in "${OVERRIDES[@]}"; do
  [[ $o == *=* ]] || { echo "run.sh: expected KEY=VALUE overrides for starvla train, got '$o'" >&2; exit 2; }
done
RUN=$OUT/$VARIANT
COMMIT=$(git rev-parse HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || COMMIT="$COMMIT-dirty"
TIMES=()
stage() {  # stage NAME COMMAND...: run it, remember how long it took
  local name=$1 start=$SECONDS; shift
  echo "== $name"
  "$@"
  TIMES+=("$name $((SECONDS - start)) s")
}

stage "set up the model env (.venv)" bash -c '[ -x .venv/bin/python ] || bash scripts/setup.sh'
stage "set up the simulator env (.venv-sim)" bash scripts/setup_sim.sh
rm -rf "$RUN"
recorded=0  # (find on a missing folder fails, and pipefail would end the script: a fresh OUT has none)
[ -d "$OUT/demos" ] && recorded=$(find "$OUT/demos" -maxdepth 1 -name 'episode_*.npz' | wc -l)
if [ "$FRESH" = 1 ] || [ "$recorded" != "$DEMOS" ] || [ ! -f "$OUT/data/robosuite_lift/meta/info.json" ]; then
  rm -rf "$OUT/demos" "$OUT/data"
  stage "record $DEMOS expert demonstrations" .venv-sim/bin/python eval/robosuite/collect.py "$OUT/demos" --episodes "$DEMOS"
  stage "write the LeRobot v3.0 dataset" .venv/bin/python eval/robosuite/to_lerobot.py "$OUT/demos" "$OUT/data/robosuite_lift"
else
  echo "== reusing $DEMOS demonstrations in $OUT/demos and the dataset in $OUT/data (FRESH=1 records them again)"
fi
[ -d "$OUT/models/tiny-Qwen2.5-VL" ] || .venv/bin/starvla make-tiny-vlm "$OUT/models/tiny-Qwen2.5-VL"
stage "train $STEPS steps" .venv/bin/starvla train --framework twinbrain --config configs/robosuite_lift.yaml \
  run_root_dir="$OUT" framework.qwenvl.base_vlm="$OUT/models/tiny-Qwen2.5-VL" \
  datasets.vla_data.data_root_dir="$OUT/data" trainer.max_train_steps="$STEPS" run_id="$VARIANT" \
  ${OVERRIDES[@]+"${OVERRIDES[@]}"}

.venv/bin/starvla serve --ckpt "$RUN/final_model/pytorch_model.pt" --host 127.0.0.1 --port "$PORT" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
stage "evaluate $EPISODES episodes through the server" .venv-sim/bin/python eval/robosuite/evaluate.py \
  --port "$PORT" --episodes "$EPISODES" --seed "$EVAL_SEED" --out "$RUN/eval"
kill $SERVER 2>/dev/null || true
# provenance next to the figures: variant, overrides, training seed, commit, Wilson 95 % interval
.venv/bin/python eval/robosuite/stats.py record "$RUN" --variant "$VARIANT" --commit "$COMMIT" --steps "$STEPS" \
  --demos "$DEMOS" -- ${OVERRIDES[@]+"${OVERRIDES[@]}"}

.venv/bin/python eval/robosuite/report.py "$RUN"
printf '%s\n' "${TIMES[@]}" | sed 's/^/  /'
