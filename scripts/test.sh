#!/usr/bin/env bash
# The README's test command: installs what is missing, builds with warnings as errors, runs every
# test (GoogleTest suites, CLI pytest, package consumer), the suite again under
# AddressSanitizer + UBSan, and the NEON build under qemu.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

ATTUNE_EXTRA_PACKAGES="g++-aarch64-linux-gnu qemu-user" ATTUNE_CMAKE_ARGS="-DATTUNE_WERROR=ON" \
  bash scripts/setup.sh
echo "== native tests (build/)"
ctest --test-dir build --output-on-failure -j 2

echo "== AddressSanitizer + UBSan (build-asan/)"
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DATTUNE_SANITIZE=address,undefined \
  -DATTUNE_BUILD_BENCH=OFF -DATTUNE_BUILD_CLI=OFF >/dev/null
cmake --build build-asan -j "$(nproc)" --target attune_tests attune_tuner_tests
ASAN_OPTIONS=detect_leaks=1 ctest --test-dir build-asan --output-on-failure -j 2 -R '^(unit|equivalence|tuner)$'

if [ -x scripts/test-aarch64.sh ]; then
  echo "== aarch64 / NEON under qemu (build-aarch64/)"
  bash scripts/test-aarch64.sh
fi
echo "test.sh: all tests passed"
