#!/usr/bin/env bash
# Installs what attune needs on Debian 12 (only what is missing) and configures + builds a
# Release tree in build/. Run by bench.sh and test.sh; safe to run again.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

packages=(build-essential cmake ninja-build git ccache libxsimd-dev libtbb-dev libbenchmark-dev libgtest-dev
          libopenblas-dev python3 python3-numpy python3-matplotlib python3-pytest)
# Extra packages a caller may add (test.sh adds the aarch64 cross toolchain and qemu).
packages+=(${ATTUNE_EXTRA_PACKAGES:-})

bash "$root/scripts/install-packages.sh" "${packages[@]}"

build="${ATTUNE_BUILD_DIR:-$root/build}"
# ccache: rebuilds (and the wall-time gate's build of its reference revision, scripts/regress.sh
# --against) recompile only what changed. CCACHE_BASEDIR makes paths under the clone relative, so a
# second source tree at the same depth below it shares the cache.
launcher=()
if command -v ccache >/dev/null; then
  export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$root}"
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
fi
echo "setup: configuring $build"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release "${launcher[@]}" ${ATTUNE_CMAKE_ARGS:-} >/dev/null
echo "setup: building"
cmake --build "$build" -j "$(nproc)"
