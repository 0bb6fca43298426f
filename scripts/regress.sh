#!/usr/bin/env bash
# The quick regression check (what CI runs after the tests):
#   scripts/regress.sh [--update-baseline] [attune_bench flags]
#       wall time of the regression set (8 one-thread benchmarks: flash and simd on the default ISA,
#       four shapes, 10 interleaved repetitions; `attune_regress suite` prints the flags), then
#       - with a stored baseline for this machine's fingerprint (bench/baselines/<hash>.json):
#         compare; a REGRESSION must reproduce in a fresh run (20 repetitions, judged on its own)
#         before it fails (exit 1), so one disturbed run does not fail CI;
#       - without one: only record (exit 0): CI machines vary, a new machine starts its history.
#       The run is appended to the history either way (for `attune_regress trend`).
#   scripts/regress.sh --icount [--update-baseline]
#       instruction counts (callgrind, ISA avx2, 1 thread, 12 small attune runs: 8 fp32, 4 bf16; ~20 s); compared with
#       bench/baselines/icount-<hash>.json at a 1% threshold when there is one, else recorded only.
#   scripts/regress.sh --paired OLD_BENCH [attune_bench flags]
#       A/B in one session: OLD_BENCH (e.g. a bench built from the main branch) and this tree's
#       bench run at the same time, one per CPU, swapping CPUs every round (duet, 5 rounds x 2
#       repetitions; abba on a 1-CPU machine), then the same comparison with this machine's
#       calibration (bench/baselines/noise-<hash>.json, from `attune_regress calibrate --store`:
#       thresholds learned from its own A/A noise) or else the default 5% threshold
#       (thresholds.json is for baselines from another time). Nothing recorded.
#   --update-baseline   also store this run as the machine's baseline (the only way one changes)
# Environment: ATTUNE_BENCH (default build/bin/attune_bench), ATTUNE_CLI (default: attune next to it),
#   ATTUNE_PYTHON (default /usr/bin/python3), ATTUNE_REGRESS_OUT (default build/regress),
#   ATTUNE_REGRESS_HISTORY (default $ATTUNE_REGRESS_OUT/history), ATTUNE_BASELINES (default
#   bench/baselines; its thresholds.json, {name_regex: percent}, is used), ATTUNE_VALGRIND (valgrind).
# Exit status: 0 no regression (or no baseline yet), 1 regression, 2 bad input or mismatched runs.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

update=0
mode=wall
old_bench=""
while [ $# -gt 0 ]; do
  case "$1" in
    --update-baseline) update=1; shift ;;
    --icount) mode=icount; shift ;;
    --paired)
      [ $# -ge 2 ] || { echo "error: --paired needs the baseline attune_bench binary" >&2; exit 2; }
      mode=paired; old_bench="$2"; shift 2 ;;
    *) break ;;
  esac
done
bench="${ATTUNE_BENCH:-build/bin/attune_bench}"
cli="${ATTUNE_CLI:-${bench%/*}/attune}"
py="${ATTUNE_PYTHON:-/usr/bin/python3}"
out="${ATTUNE_REGRESS_OUT:-build/regress}"
hist="${ATTUNE_REGRESS_HISTORY:-$out/history}"
baselines="${ATTUNE_BASELINES:-bench/baselines}"
export PYTHONPATH="$root/regress${PYTHONPATH:+:$PYTHONPATH}"
regress() { "$py" -m attune_regress "$@"; }
mkdir -p "$out"
stamp="$(date -u +%Y%m%d-%H%M%S)"
thresholds=()
[ -f "$baselines/thresholds.json" ] && thresholds=(--thresholds "$baselines/thresholds.json")

if [ "$mode" = icount ]; then
  [ $# -eq 0 ] || { echo "error: --icount takes no bench flags (got $*)" >&2; exit 2; }
  json="$out/icount-$stamp.json"
  echo "== instruction counts (callgrind, ISA avx2, 1 thread)"
  regress icount run --attune "$cli" --out "$json" --work "$out/icount-work" >/dev/null
  status=0
  set +e
  base="$(regress icount baseline path "$json" --dir "$baselines")"
  found=$?
  set -e
  if [ "$found" -eq 0 ]; then
    echo "== compare with $base"
    regress icount compare "$base" "$json" --threshold 1 --markdown "$out/icount-compare.md" || status=$?
  elif [ "$found" -eq 3 ]; then
    echo "== no instruction-count baseline for this configuration in $baselines: recorded in $json only"
  else
    exit "$found"
  fi
  if [ "$update" -eq 1 ]; then
    echo "== new instruction-count baseline: $(regress icount baseline update "$json" --dir "$baselines")"
  fi
  exit "$status"
fi

if [ ! -x "$bench" ]; then
  echo "error: $bench is not built (cmake --build build --target attune_bench)" >&2
  exit 2
fi
mapfile -t suite < <(regress suite --bench "$bench")

if [ "$mode" = paired ]; then
  [ -x "$old_bench" ] || { echo "error: $old_bench is not an executable attune_bench" >&2; exit 2; }
  [ "$update" -eq 0 ] || { echo "error: --update-baseline does not go with --paired" >&2; exit 2; }
  echo "== paired session: $old_bench (base) against $bench (new)"
  # The default 5% threshold: thresholds.json is loosened for baselines from another time or machine.
  exec "$py" -m attune_regress paired --base-bench "$old_bench" --new-bench "$bench" --out "$out/paired-$stamp" \
    --calibrations "$baselines" --markdown "$out/paired-compare.md" -- "${suite[@]}" "$@"
fi

run_suite() {  # run_suite OUT.json [flags]: one run of the regression set
  local dest="$1"
  shift
  "$bench" "${suite[@]}" --benchmark_out="$dest" --benchmark_out_format=json "$@" >/dev/null
}
json="$out/bench-$stamp.json"
echo "== regression bench: ${suite[*]}"
run_suite "$json" "$@"

status=0
set +e
base="$(regress baseline path "$json" --dir "$baselines")"
found=$?
set -e
if [ "$found" -eq 0 ]; then
  echo "== compare with $base"
  regress compare "$base" "$json" --markdown "$out/compare.md" "${thresholds[@]}" || status=$?
  if [ "$status" -eq 1 ]; then
    # A regression must reproduce: a fresh run with twice the repetitions, judged on its own (a
    # merged pair would still carry the disturbed run's slow half).
    echo "== REGRESSION reported: confirming with a fresh run (20 repetitions)"
    again="$out/bench-$stamp-confirm.json"
    run_suite "$again" "$@" --benchmark_repetitions=20
    status=0
    regress compare "$base" "$again" --markdown "$out/compare.md" "${thresholds[@]}" || status=$?
    if [ "$status" -eq 1 ]; then echo "== confirmed"; else echo "== not confirmed by the fresh run"; fi
  fi
elif [ "$found" -eq 3 ]; then
  echo "== no baseline for this machine in $baselines: recording only"
else
  exit "$found"
fi
regress record "$json" --history "$hist"
if [ "$update" -eq 1 ]; then
  echo "== new baseline: $(regress baseline update "$json" --dir "$baselines")"
fi
exit "$status"
