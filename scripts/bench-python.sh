#!/usr/bin/env bash
# Speed of the Python package, as ratios within one run (bench/python_bench.py): per-call time of
# attune.attention on a tiny problem (1 head, seq 16, d 64) beside the C++ API's (attune_bench,
# same kernel and thread count) and torch SDPA's, and a 4-layer transformers model's forward with
# attn_implementation="attune" vs "sdpa" with the attention share. About 2 minutes.
# Usage: scripts/bench-python.sh [--skip-model] [--rounds N] [--model-reps N] [--json OUT]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
[ -x build/bin/attune_bench ] || bash scripts/setup.sh
bash scripts/python-env.sh
# The C++ API on the same call: flash, best ISA, 1 thread (what the Python side runs).
cpp_ns=$(build/bin/attune_bench --no-probes --shape b=1,hq=1,sq=16,d=64 --kernels flash --threads 1 \
  --benchmark_repetitions=15 --benchmark_min_time=0.02 --benchmark_format=json 2>/dev/null |
  build-py/venv/bin/python -c '
import json, sys
runs = [b for b in json.load(sys.stdin)["benchmarks"] if b.get("aggregate_name") == "median"]
scale = {"ns": 1, "us": 1e3, "ms": 1e6, "s": 1e9}[runs[0]["time_unit"]]
print(runs[0]["real_time"] * scale)')
build-py/venv/bin/python bench/python_bench.py --cpp-ns "$cpp_ns" "$@"
