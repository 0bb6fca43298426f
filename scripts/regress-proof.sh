#!/usr/bin/env bash
# Proves the regression gate on this machine (run it when the machine is otherwise quiet):
#   first a calibration (--calibrate 10 A/A sessions: the thresholds `attune_regress calibrate` would
#   learn here, written to OUT/calibration.json), then, judged with it:
#   (a) A/A: N paired sessions (duet) of build/bin/attune_bench against itself: false alarms
#   (b) A/B: M sessions against the same bench with a known real slowdown (default --inject-slowdown 5:
#       the bench spins for 5% of each timed call's own duration, the same cost on every CPU)
#   (c) the smallest slowdown detected in >= 90% of comparisons (slowdowns injected into the A/A data)
# Writes summary.json, summary.md and proof.png to build/regress/proof-<time>/ (or --out DIR).
# Usage: scripts/regress-proof.sh [--aa N (30)] [--ab M (30)] [--slowdown-args 'FLAGS'] [--out DIR] ...
#   (every option of `python3 -m attune_regress proof --help`). Defaults take ~21 minutes on 2 cores;
#   the smoke test: scripts/regress-proof.sh --calibrate 5 --aa 2 --ab 2
# Environment: ATTUNE_BENCH (default build/bin/attune_bench), ATTUNE_PYTHON (default /usr/bin/python3).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export PYTHONPATH="$root/regress${PYTHONPATH:+:$PYTHONPATH}"
exec "${ATTUNE_PYTHON:-/usr/bin/python3}" -m attune_regress proof --bench "${ATTUNE_BENCH:-build/bin/attune_bench}" "$@"
