#!/usr/bin/env bash
# The README's test command: installs what is missing, builds with warnings as errors, runs every
# test (GoogleTest suites, CLI pytest, package consumer), the Python package's tests, the suite again under
# AddressSanitizer + UBSan, the threading tests under ThreadSanitizer, and the NEON build under qemu.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

ATTUNE_EXTRA_PACKAGES="g++-aarch64-linux-gnu qemu-user python3-venv" ATTUNE_CMAKE_ARGS="-DATTUNE_WERROR=ON" \
  bash scripts/setup.sh
echo "== native tests (build/)"
# On x86_64 the suite includes the emulated-CPU dispatch tests (tests/emulated, qemu-user): refuse
# to pass without them, so no CI machine silently skips the proof for CPUs it is not.
if [ "$(uname -m)" = x86_64 ] && ! ctest --test-dir build -N -R '^emulated_cpus$' | grep -q 'Total Tests: 1'; then
  echo "test.sh: ctest has no emulated_cpus test (is qemu-x86_64 from qemu-user installed?)" >&2
  exit 1
fi
ctest --test-dir build --output-on-failure -j 2

echo "== Python package (build-py/: venv, pip install ., pytest)"
bash scripts/test-python.sh

echo "== AddressSanitizer + UBSan (build-asan/)"
# -O1, as ASan's own docs advise: at -O2 UBSan's checks in the per-ISA tile templates take GCC 12
# ~300 s for isa/avx512.cpp alone (-O1: ~110 s), the largest share of a CI run. On x86_64 the
# kernels are built for AMX, AVX-512 and AVX2 (the widest tiles and a 256-bit one, over the same
# templates and driver as the rest; the native suite above runs every ISA): each further ISA's
# unit is another two minutes of instrumented compiling.
asan_isas=all
[ "$(uname -m)" = x86_64 ] && asan_isas="amx;avx512;avx2"
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DATTUNE_SANITIZE=address,undefined \
  -DATTUNE_ISAS="$asan_isas" \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g -DNDEBUG" -DATTUNE_BUILD_BENCH=OFF -DATTUNE_BUILD_CLI=OFF >/dev/null
cmake --build build-asan -j "$(nproc)" --target attune_tests attune_tuner_tests
ASAN_OPTIONS=detect_leaks=1 ctest --test-dir build-asan --output-on-failure -j 2 -R '^(unit|equivalence|tuner|paged)$'

echo "== ThreadSanitizer: the threading tests (build-tsan/)"
# The threads and their scratch are the driver's, the same on every ISA: on x86_64 the kernels are
# built for AVX2 only (each further ISA's unit is minutes of TSan-instrumented compiling).
tsan_isas=all
[ "$(uname -m)" = x86_64 ] && tsan_isas=avx2
cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DATTUNE_SANITIZE=thread -DATTUNE_ISAS="$tsan_isas" \
  -DATTUNE_BUILD_BENCH=OFF -DATTUNE_BUILD_CLI=OFF >/dev/null
cmake --build build-tsan -j "$(nproc)" --target attune_tests
# tests/tsan.supp says which reports are suppressed and why (uninstrumented thread pools).
# history_size=7 keeps the older access's stack so those reports can be matched; with
# suppress_equal_addresses=0 TSan skips its address de-duplication, which is quadratic in the
# millions of suppressed reports and would turn seconds into minutes.
TSAN_OPTIONS="suppressions=$root/tests/tsan.supp halt_on_error=1 second_deadlock_stack=1 history_size=7 suppress_equal_addresses=0" \
  ctest --test-dir build-tsan --output-on-failure -R '^threading$'

if [ -x scripts/test-aarch64.sh ]; then
  echo "== aarch64 / NEON under qemu (build-aarch64/)"
  bash scripts/test-aarch64.sh
fi
echo "test.sh: all tests passed"
