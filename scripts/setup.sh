#!/usr/bin/env bash
# Installs what attune needs on Debian 12 (only what is missing) and configures + builds a
# Release tree in build/. Run by bench.sh and test.sh; safe to run again.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

packages=(build-essential cmake ninja-build git libxsimd-dev libtbb-dev libbenchmark-dev libgtest-dev
          libopenblas-dev python3 python3-numpy python3-matplotlib python3-pytest)
# Extra packages a caller may add (test.sh adds the aarch64 cross toolchain and qemu).
packages+=(${ATTUNE_EXTRA_PACKAGES:-})

bash "$root/scripts/install-packages.sh" "${packages[@]}"

build="${ATTUNE_BUILD_DIR:-$root/build}"
echo "setup: configuring $build"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release ${ATTUNE_CMAKE_ARGS:-} >/dev/null
echo "setup: building"
cmake --build "$build" -j "$(nproc)"
