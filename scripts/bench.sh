#!/usr/bin/env bash
# The README's main command: installs what is missing, builds Release, checks every kernel
# against the float64 reference, then benchmarks them and writes the results into
# results/<host>-<date>/ (a new folder each run; earlier runs are never overwritten).
# Usage: scripts/bench.sh [--preset quick|standard|full] [extra attune_bench flags]
#   e.g. scripts/bench.sh --model llama3-8b --shape b=1,hq=32,hkv=8,sq=4096,d=128,causal=1 --threads 1,2
#   (--shape/--model/--dtype/--kernels/--threads go to attune_bench; the PyTorch peer then runs
#   the same shapes, read from the bench JSON)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh

stamp="$(date -u +%Y%m%d-%H%M%S)"
out="results/$(hostname -s)-$stamp"
n=1
while [ -e "$out" ]; do out="results/$(hostname -s)-$stamp-$((n++))"; done
mkdir -p "$out"

echo "== machine"
build/bin/attune info | tee "$out/info.txt"
echo "== verification against the float64 reference"
build/bin/attune verify | tee "$out/verify.txt"
if [ -x build/bin/attune_bench ]; then
  echo "== benchmarks (progress on stderr)"
  build/bin/attune_bench --benchmark_out="$out/bench.json" --benchmark_out_format=json "$@"
  # PyTorch's SDPA as a peer on the same shapes, when torch is importable (optional).
  for py in build-py/venv/bin/python python3 /usr/bin/python3; do
    if [ -x "$(command -v "$py")" ] && "$py" -c "import torch" 2>/dev/null; then
      "$py" bench/pytorch_sdpa.py "$out/bench.json" "$out/pytorch.json"
      break
    fi
  done
fi
if [ -f "$out/bench.json" ]; then
  echo "== report (plots and HTML)"
  inputs=("$out/bench.json")
  [ -f "$out/pytorch.json" ] && inputs+=("$out/pytorch.json")
  if bash scripts/report.sh "${inputs[@]}" --out "$out/report" >/dev/null; then
    echo "report: $out/report/report.html"
  else
    echo "report: failed (the bench results are still in $out)" >&2
  fi
fi
echo "results: $out"
