#!/usr/bin/env bash
# The tuner's proof on this machine: exhaustive, smart and random searches over the same 12-shape
# grid, then a fresh interleaved re-measurement of every strategy's choices (attune tune-check),
# summarised by scripts/tune_proof.py (markdown table, JSON and a figure).
# Usage: scripts/tune-proof.sh [OUT_DIR]   (default build/tune-proof; about 10-15 minutes)
# Environment: ATTUNE (default build/bin/attune), ATTUNE_PYTHON (default /usr/bin/python3),
#   TUNE_PROOF_GRID (default "--seq 128,256,512 --heads 8 --dk 64,128 --causal both"),
#   TUNE_PROOF_WINDOW_MS (default 5: the exhaustive search measures ~1300 candidates per shape).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
attune="${ATTUNE:-build/bin/attune}"
py="${ATTUNE_PYTHON:-/usr/bin/python3}"
out="${1:-build/tune-proof}"
read -r -a grid <<<"${TUNE_PROOF_GRID:---seq 128,256,512 --heads 8 --dk 64,128 --causal both}"
window="${TUNE_PROOF_WINDOW_MS:-5}"
if [ ! -x "$attune" ]; then
  echo "error: $attune is not built (cmake --build build --target attune_cli)" >&2
  exit 2
fi
mkdir -p "$out"
rm -f "$out"/{exhaustive,smart,random}.{json,h} "$out/check.json"

timed() {  # name, then the tune arguments; records the wall time in $out/<name>.seconds
  local name="$1"; shift
  local t0=$SECONDS
  "$attune" tune "${grid[@]}" --window-ms "$window" --budget 2h --out "$out/$name.h" --json "$out/$name.json" "$@"
  echo $((SECONDS - t0)) > "$out/$name.seconds"
}
echo "== smart"
timed smart --strategy smart
# Random gets as many evaluations per shape as smart used on the median shape.
evals="$("$py" - "$out/smart.json" <<'PY'
import json, statistics, sys
ev = [json.loads(l)["evaluations"] for l in open(sys.argv[1]) if '"type":"choice"' in l]
print(max(1, int(statistics.median(ev))))
PY
)"
echo "== random (--evals $evals, as smart's median)"
timed random --strategy random --evals "$evals" --seed 7
echo "== exhaustive"
timed exhaustive --strategy exhaustive
echo "== fresh re-measurement of the choices"
"$attune" tune-check "$out/exhaustive.json" "$out/smart.json" "$out/random.json" --samples 15 --json "$out/check.json"
"$py" scripts/tune_proof.py "$out"
