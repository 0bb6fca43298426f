#!/usr/bin/env bash
# Runs the report tool (reports/attune_report) with Debian's Python, which has matplotlib and numpy.
# Usage: scripts/report.sh BENCH.json [MORE.json ...] --out DIR [--compare BEFORE.json AFTER.json]
#                          [--tuner TUNE.json] [--history HISTORY.jsonl]
#        scripts/report.sh results/hostA results/hostB ... --out DIR   (machines side by side: hosts.html)
#        scripts/report.sh weights W.npy [--labels LABELS.txt] --out DIR
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHONPATH="$root/reports${PYTHONPATH:+:$PYTHONPATH}" exec "${ATTUNE_PYTHON:-/usr/bin/python3}" -m attune_report "$@"
