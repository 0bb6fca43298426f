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
#   scripts/regress.sh --against REV [attune_bench flags]
#       what CI runs: builds REV's attune_bench (a git worktree in $ATTUNE_REGRESS_OUT/reference/src,
#       sharing setup.sh's ccache, so only what changed since REV compiles) and runs it against this
#       tree's bench in a paired duet session, judged with this machine's calibration
#       (bench/baselines/noise-<hash>.json); a REGRESSION must repeat in a second session before it
#       fails (exit 1). Without a calibration for this machine, or when REV is
#       not in the clone or does not build, the comparison is reported but never fails (exit 0):
#       a machine kind is gated once its noise is known (`attune_regress calibrate --store`).
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
    --against)
      [ $# -ge 2 ] || { echo "error: --against needs a git revision" >&2; exit 2; }
      mode=against; against="$2"; shift 2 ;;
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

if [ "$mode" = against ]; then
  [ "$update" -eq 0 ] || { echo "error: --update-baseline does not go with --against" >&2; exit 2; }
  report_only() { echo "== $1: the comparison is not gated (exit 0)"; exit 0; }
  ref="$(git rev-parse --verify --quiet "$against^{commit}")" || report_only "reference $against is not in this clone"
  if [ "$ref" = "$(git rev-parse HEAD)" ] && git diff --quiet HEAD -- kernels bench; then
    report_only "HEAD is the reference revision ${ref:0:12}: nothing to compare"
  fi
  src="$out/reference/src"
  echo "== building the reference ${ref:0:12} in $src"
  git worktree remove --force "$src" >/dev/null 2>&1 || rm -rf "$src"
  git worktree prune
  git worktree add --detach --force "$src" "$ref" >/dev/null 2>&1 || report_only "cannot check out $against"
  trap 'git worktree remove --force "$src" >/dev/null 2>&1 || true' EXIT
  started=$SECONDS
  if [ -n "${ATTUNE_REFERENCE_BUILD:-}" ]; then  # tests: a stand-in that puts a bench in $src/build/bin
    "$ATTUNE_REFERENCE_BUILD" "$src" || report_only "the reference ${ref:0:12} did not build"
  else
    launcher=()
    if command -v ccache >/dev/null; then
      export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$root}"
      launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
    fi
    # The same configuration as build/ (setup.sh, plus test.sh's -DATTUNE_WERROR=ON): identical
    # compile commands are what let ccache serve every file that did not change.
    werror="$(sed -n 's/^ATTUNE_WERROR:BOOL=//p' build/CMakeCache.txt 2>/dev/null || true)"
    if ! { cmake -S "$src" -B "$src/build" -G Ninja -DCMAKE_BUILD_TYPE=Release "${launcher[@]}" \
             -DATTUNE_WERROR="${werror:-OFF}" >/dev/null &&
           cmake --build "$src/build" -j "$(nproc)" --target attune_bench >/dev/null; }; then
      report_only "the reference ${ref:0:12} did not build"
    fi
  fi
  echo "== reference built in $((SECONDS - started)) s"
  set +e
  "$py" -m attune_regress paired --base-bench "$src/build/bin/attune_bench" --new-bench "$bench" \
    --out "$out/against-$stamp" --calibrations "$baselines" --markdown "$out/against-compare.md" --confirm \
    -- "${suite[@]}" "$@" | tee "$out/against-$stamp.txt"
  status=${PIPESTATUS[0]}
  set -e
  if [ "$status" -eq 1 ] && ! grep -q "^thresholds: calibrated for" "$out/against-$stamp.txt"; then
    report_only "a REGRESSION verdict, but this machine has no calibration in $baselines"
  fi
  exit "$status"
fi

if [ "$mode" = paired ]; then
  [ -x "$old_bench" ] || { echo "error: $old_bench is not an executable attune_bench" >&2; exit 2; }
  [ "$update" -eq 0 ] || { echo "error: --update-baseline does not go with --paired" >&2; exit 2; }
  echo "== paired session: $old_bench (base) against $bench (new)"
  # The default 5% threshold: thresholds.json is loosened for baselines from another time or machine.
  exec "$py" -m attune_regress paired --base-bench "$old_bench" --new-bench "$bench" --out "$out/paired-$stamp" \
    --calibrations "$baselines" --markdown "$out/paired-compare.md" --confirm -- "${suite[@]}" "$@"
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
