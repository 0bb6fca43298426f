#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) in build-fuzz/ (kernels for the scalar ISA
# only, at -O1: no fuzzer runs a kernel, and the kernel units were most of the build) and runs each for the given
# number of seconds (default 60) on a scratch copy of its committed seed corpus (fuzz/corpus/).
# A crash leaves its reproducer in build-fuzz/artifacts/ and fails the script; turn it into a
# regression test and add the input to the corpus.
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]   (ATTUNE_FUZZ_JOBS=N caps the build's parallel jobs)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
seconds="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(fuzz_npy fuzz_tuner_log fuzz_args fuzz_tuning_file fuzz_paged)

bash scripts/install-packages.sh clang libclang-rt-14-dev cmake ninja-build libxsimd-dev libtbb-dev
build="$root/build-fuzz"
CC=clang CXX=clang++ cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DATTUNE_BUILD_FUZZERS=ON \
  -DATTUNE_SANITIZE=address,undefined -DATTUNE_ISAS=scalar -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g -DNDEBUG" -DATTUNE_BUILD_TESTS=OFF -DATTUNE_BUILD_BENCH=OFF -DATTUNE_BUILD_CLI=OFF -DATTUNE_WITH_BLAS=OFF >/dev/null
cmake --build "$build" -j "${ATTUNE_FUZZ_JOBS:-$(nproc)}" --target "${targets[@]}"

mkdir -p "$build/artifacts"
for t in "${targets[@]}"; do
  corpus_name="${t#fuzz_}"
  work="$build/corpus/$corpus_name"
  rm -rf "$work" && mkdir -p "$work"
  cp -r "fuzz/corpus/$corpus_name/." "$work/"
  echo "fuzz: $t for ${seconds}s"
  "$build/fuzz/$t" -max_total_time="$seconds" -max_len=4096 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$build/artifacts/$t-" "$work" 2>&1 | grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+ +DONE)|ERROR|SUMMARY" || true
  if ls "$build/artifacts/$t-"* >/dev/null 2>&1; then
    echo "fuzz: $t found a crash: $(ls "$build/artifacts/$t-"*)" >&2
    exit 1
  fi
done
echo "fuzz: no crashes"
