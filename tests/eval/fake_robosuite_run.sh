#!/usr/bin/env bash
# Stands in for eval/robosuite/run.sh in tests (no simulator, no training): takes the same environment and
# KEY=VALUE arguments, writes what training and evaluate.py would (config.yaml with the seed, eval/results.json
# with per-episode seeds), then runs the real provenance step (stats.py record). Successes: a fixed count per
# variant from FAKE_SUCCESSES ("state_right=30,state_head=20"; default 25).
set -euo pipefail
RUN=$OUT/$VARIANT
mkdir -p "$RUN/eval"
printf '%s\n' "$@" > "$RUN/argv.txt"
seed=42
for o in "$@"; do case $o in seed=*) seed=${o#seed=} ;; esac; done
printf 'run_id: %s\nseed: %s\n' "$VARIANT" "$seed" > "$RUN/config.yaml"
successes=$(printf '%s\n' "${FAKE_SUCCESSES:-}" | tr ',' '\n' | sed -n "s/^$VARIANT=//p")
"$FAKE_PYTHON" - "$RUN/eval/results.json" "$EPISODES" "$EVAL_SEED" "${successes:-25}" <<'PY'
import json, sys
path, n, seed, k = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
episodes = [{"seed": seed + i, "success": i < k, "steps": 10, "queries": 3} for i in range(n)]
json.dump({"task": "lift", "episodes": n, "successes": k, "success_rate": k / n, "seed": seed, "horizon": 100,
           "per_episode": episodes}, open(path, "w"))
PY
"$FAKE_PYTHON" eval/robosuite/stats.py record "$RUN" --variant "$VARIANT" --commit fakecommit --steps "$STEPS" \
  --demos "$DEMOS" -- "$@"
