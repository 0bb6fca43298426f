#!/usr/bin/env bash
# Cross builds the GoogleTest suites for AArch64 (NEON, single-threaded: no TBB) in build-aarch64/
# and runs them under qemu-aarch64 through ctest. Correctness only: timings under qemu mean nothing.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
build="$root/build-aarch64"

# The cross toolchain and qemu, plus what a cross configure needs from the host (xsimd's headers,
# GoogleTest's sources); only what is missing is installed.
packages=(cmake ninja-build libxsimd-dev googletest g++-aarch64-linux-gnu qemu-user)
bash "$root/scripts/install-packages.sh" "${packages[@]}"

echo "test-aarch64: configuring $build (toolchain cmake/aarch64-linux-gnu.cmake)"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_TOOLCHAIN_FILE="$root/cmake/aarch64-linux-gnu.cmake" \
  -DCMAKE_BUILD_TYPE=Release -DATTUNE_WITH_TBB=OFF -DATTUNE_GTEST_FROM_SOURCE=ON \
  -DATTUNE_BUILD_CLI=OFF -DATTUNE_BUILD_BENCH=OFF -DATTUNE_WITH_BLAS=OFF >/dev/null

echo "test-aarch64: building attune_tests (-j2)"
start=$SECONDS
cmake --build "$build" -j 2  # every test binary (attune_tests, the tuner tests)
echo "test-aarch64: build took $((SECONDS - start)) s"

# A build that silently lost its NEON translation unit would still pass on scalar alone.
emulator="$(sed -n 's/^ATTUNE_QEMU_AARCH64:FILEPATH=//p' "$build/CMakeCache.txt")"
if [ -z "$emulator" ] || [ ! -x "$emulator" ]; then
  echo "test-aarch64: the toolchain found no qemu-aarch64" >&2
  exit 1
fi
listing="$("$emulator" "$build/tests/attune_tests" --gtest_list_tests --gtest_filter='Registry/*')"
for prefix in simd_neon_ flash_neon_; do
  n="$(grep -c "/${prefix}" <<<"$listing" || true)"
  echo "test-aarch64: ${n} equivalence cases named ${prefix}*"
  if [ "$n" -eq 0 ]; then
    echo "test-aarch64: no ${prefix}* cases: the NEON path is not registered" >&2
    exit 1
  fi
done

# ctest runs attune_tests under qemu-aarch64 (the toolchain's CMAKE_CROSSCOMPILING_EMULATOR);
# the timeout kills a hung emulator instead of waiting forever.
echo "test-aarch64: running ctest under qemu-aarch64"
start=$SECONDS
ctest --test-dir "$build" --output-on-failure --timeout 1200 -j 2
echo "test-aarch64: tests took $((SECONDS - start)) s"
echo "test-aarch64: all tests passed"
