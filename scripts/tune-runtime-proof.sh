#!/usr/bin/env bash
# The run-time table's proof on this machine, no rebuild: a smart tune of the tune-auto proof's
# prefill grid writes its tuning file; an exhaustive search of held-out shapes no tune measured
# gives each its own best; `attune tune-check` with ATTUNE_TUNING=<the tuning file> re-measures,
# fresh and interleaved, `auto` (the run-time table's nearest bucket) against that best and the
# default. Summary: scripts/tune_proof.py --runtime (median of auto / own best >= 0.95).
# Usage: scripts/tune-runtime-proof.sh [OUT_DIR]   (default build/tune-runtime; ~30 min on 2 cores)
# Environment: ATTUNE (default build/bin/attune), ATTUNE_PYTHON (default /usr/bin/python3),
#   TUNE_RUNTIME_GRID (default "--seq 128,512,1024 --heads 8 --dk 64,128 --causal both"),
#   TUNE_RUNTIME_HELDOUT (default "--seq 256,768 --heads 8 --dk 64,128 --causal both"),
#   TUNE_RUNTIME_WAIT (seconds the tuner waits for a quiet machine per check, default 10).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
attune="${ATTUNE:-build/bin/attune}"
py="${ATTUNE_PYTHON:-/usr/bin/python3}"
out="$(mkdir -p "${1:-build/tune-runtime}" && cd "${1:-build/tune-runtime}" && pwd)"
read -r -a grid <<<"${TUNE_RUNTIME_GRID:---seq 128,512,1024 --heads 8 --dk 64,128 --causal both}"
read -r -a heldout <<<"${TUNE_RUNTIME_HELDOUT:---seq 256,768 --heads 8 --dk 64,128 --causal both}"
wait_quiet="${TUNE_RUNTIME_WAIT:-10}"
rm -f "$out"/tune.* "$out"/heldout.* "$out"/check-heldout.json
export ATTUNE_TUNING=  # the tunes themselves run without any run-time table
echo "== smart tune of the grid (writes tune.tuning.json)"
"$attune" tune "${grid[@]}" --strategy smart --wait-quiet "$wait_quiet" --json "$out/tune.json" --out "$out/tune.h"
echo "== exhaustive search of the held-out shapes (their own best)"
"$attune" tune "${heldout[@]}" --strategy exhaustive --window-ms 5 --budget 40m --wait-quiet "$wait_quiet" \
  --json "$out/heldout.json" --out "$out/heldout.h"
echo "== auto through the run-time table vs each held-out shape's own best, fresh and interleaved"
ATTUNE_TUNING="$out/tune.tuning.json" "$attune" info | grep "tuned table"
ATTUNE_TUNING="$out/tune.tuning.json" "$attune" tune-check "$out/heldout.json" --samples 15 \
  --wait-quiet "$wait_quiet" --json "$out/check-heldout.json"
"$py" scripts/tune_proof.py --runtime "$out"
