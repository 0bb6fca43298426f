#!/usr/bin/env bash
# The Python package's environment: a virtual environment in build-py/venv with the pinned test
# requirements (python/requirements-test.txt: numpy, ml_dtypes, pytest, torch, transformers) and
# this checkout installed into it with `pip install .` (scikit-build-core; CMake build in
# build-py/). Used by test-python.sh and bench-python.sh; safe to rerun (both are reused).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${ATTUNE_PYTHON:-python3}"
venv="$root/build-py/venv"

t0=$(date +%s)
if [ ! -x "$venv/bin/python" ]; then
  echo "python-env: creating $venv with $("$python" --version 2>&1)"
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r python/requirements-test.txt
t1=$(date +%s)
echo "python-env: requirements ready in $((t1 - t0)) s"
# The build backend comes pinned from the requirements, hence no build isolation.
CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-build-isolation .
echo "python-env: pip install . in $(($(date +%s) - t1)) s"
