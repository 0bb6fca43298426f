#!/usr/bin/env bash
# The quick regression check: benchmarks a small, stable subset (1 thread, flash and simd on the
# default ISA, four shapes) with 10 interleaved repetitions, then
#   - compares with this machine's stored baseline (bench/baselines/<fingerprint-hash>.json) when
#     there is one, failing (exit 1) on a REGRESSION, or
#   - only records the run when there is none (exit 0);
# either way the run's summary is appended to the history (for `attune_regress trend`).
# Usage: scripts/regress.sh [--update-baseline] [extra attune_bench flags, e.g. --benchmark_repetitions=20]
#   --update-baseline   also store this run as the machine's baseline (the only way one changes)
# Environment: ATTUNE_BENCH (default build/bin/attune_bench), ATTUNE_PYTHON (default /usr/bin/python3),
#   ATTUNE_REGRESS_OUT (default build/regress), ATTUNE_REGRESS_HISTORY (default $ATTUNE_REGRESS_OUT/history),
#   ATTUNE_BASELINES (default bench/baselines; a thresholds.json there, {name_regex: percent}, is used).
# Exit status: 0 no regression (or no baseline yet), 1 regression, 2 bad input or mismatched runs.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

update=0
if [ "${1:-}" = "--update-baseline" ]; then update=1; shift; fi
bench="${ATTUNE_BENCH:-build/bin/attune_bench}"
py="${ATTUNE_PYTHON:-/usr/bin/python3}"
out="${ATTUNE_REGRESS_OUT:-build/regress}"
hist="${ATTUNE_REGRESS_HISTORY:-$out/history}"
baselines="${ATTUNE_BASELINES:-bench/baselines}"
if [ ! -x "$bench" ]; then
  echo "error: $bench is not built (cmake --build build --target attune_bench)" >&2
  exit 2
fi
isa="$("${bench%/*}/attune" info 2>/dev/null | sed -n 's/^isa default: *//p' || true)"
isa="${isa:-[a-z0-9_]+}"
shapes='hq:8/hkv:8/sq:(128/skv:128/d:128/causal:0|512/skv:512/d:64/causal:0|512/skv:512/d:128/causal:1)'
shapes="($shapes|hq:32/hkv:8/sq:1/skv:8192/d:128/causal:0)"
filter="^attention/(flash|simd)/$isa/b:1/$shapes/t:1/"

mkdir -p "$out"
json="$out/bench-$(date -u +%Y%m%d-%H%M%S).json"
echo "== regression bench: $filter"
"$bench" --preset quick --no-probes --benchmark_filter="$filter" --benchmark_repetitions=10 \
  --benchmark_enable_random_interleaving=true --benchmark_report_aggregates_only=false \
  --benchmark_out="$json" --benchmark_out_format=json "$@" >/dev/null

export PYTHONPATH="$root/regress${PYTHONPATH:+:$PYTHONPATH}"
status=0
set +e
base="$("$py" -m attune_regress baseline path "$json" --dir "$baselines")"
found=$?
set -e
if [ "$found" -eq 0 ]; then
  thresholds=()
  [ -f "$baselines/thresholds.json" ] && thresholds=(--thresholds "$baselines/thresholds.json")
  echo "== compare with $base"
  "$py" -m attune_regress compare "$base" "$json" --markdown "$out/compare.md" "${thresholds[@]}" || status=$?
elif [ "$found" -eq 3 ]; then
  echo "== no baseline for this machine in $baselines: recording only"
else
  exit "$found"
fi
"$py" -m attune_regress record "$json" --history "$hist"
if [ "$update" -eq 1 ]; then
  echo "== new baseline: $("$py" -m attune_regress baseline update "$json" --dir "$baselines")"
fi
exit "$status"
