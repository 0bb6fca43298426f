#!/usr/bin/env bash
# The tuner's end-to-end proof: a smart tune on this machine, a rebuild with its header
# (-DATTUNE_TUNED_CONFIG), then the rebuilt `attune tune-check` re-measuring, fresh and interleaved,
# `auto` (the compiled table) against `default` (the built-in heuristic) on every tuned shape and on
# held-out shapes no tune measured (nearest-bucket dispatch). Summary: scripts/tune_proof.py --auto.
# Usage: scripts/tune-auto-proof.sh [OUT_DIR]   (default build/tune-auto; about 30 minutes on 2 cores
# with the two default storage types)
# Environment: ATTUNE (default build/bin/attune), ATTUNE_PYTHON (default /usr/bin/python3),
#   TUNE_AUTO_GRID (prefill grid, default "--seq 128,512,1024 --heads 8 --dk 64,128 --causal both"),
#   TUNE_AUTO_DECODE (decode grid, default "--seq-q 1 --seq 2048,8192 --heads 32 --group 4 --dk 128"),
#   TUNE_AUTO_HELDOUT (held-out grid, default "--seq 256,768 --heads 8 --dk 64,128 --causal both"),
#   TUNE_AUTO_DTYPES (storage types every grid is tuned and checked in, default "fp32,bf16"; the
#   summary fails unless the rebuilt `auto` runs each tuned shape's entry of its own type).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
attune="${ATTUNE:-build/bin/attune}"
py="${ATTUNE_PYTHON:-/usr/bin/python3}"
out="$(mkdir -p "${1:-build/tune-auto}" && cd "${1:-build/tune-auto}" && pwd)"
read -r -a grid <<<"${TUNE_AUTO_GRID:---seq 128,512,1024 --heads 8 --dk 64,128 --causal both}"
read -r -a decode <<<"${TUNE_AUTO_DECODE:---seq-q 1 --seq 2048,8192 --heads 32 --group 4 --dk 128}"
read -r -a heldout <<<"${TUNE_AUTO_HELDOUT:---seq 256,768 --heads 8 --dk 64,128 --causal both}"
dtypes=(--dtype "${TUNE_AUTO_DTYPES:-fp32,bf16}")
if [ ! -x "$attune" ]; then
  echo "error: $attune is not built (cmake --build build --target attune_cli)" >&2
  exit 2
fi
rm -f "$out"/tune.json "$out"/attune_tuned.h "$out"/check-*.json "$out"/tune.seconds

echo "== smart tune (prefill grid, then decode shapes into the same log)"
t0=$SECONDS
"$attune" tune "${grid[@]}" "${dtypes[@]}" --strategy smart --json "$out/tune.json" --out "$out/attune_tuned.h"
"$attune" tune "${decode[@]}" "${dtypes[@]}" --strategy smart --json "$out/tune.json" --out "$out/attune_tuned.h" --resume
echo $((SECONDS - t0)) > "$out/tune.seconds"

echo "== rebuild with the generated header (build-tuned/)"
cmake -S . -B build-tuned -G Ninja -DCMAKE_BUILD_TYPE=Release -DATTUNE_TUNED_CONFIG="$out/attune_tuned.h" \
  -DATTUNE_BUILD_TESTS=OFF -DATTUNE_BUILD_BENCH=OFF >/dev/null
cmake --build build-tuned --target attune_cli
tuned=build-tuned/bin/attune
"$tuned" info | sed -n '/tuned/,$p' | head -20

echo "== auto (tuned table) vs default (built-in heuristic), re-measured fresh and interleaved"
"$tuned" tune-check "$out/tune.json" --samples 15 --json "$out/check-tuned.json"
echo "== held-out shapes (no tune measured them: nearest-bucket dispatch)"
"$tuned" tune-check "${heldout[@]}" "${dtypes[@]}" --samples 15 --json "$out/check-heldout.json"
"$py" scripts/tune_proof.py --auto "$out"
