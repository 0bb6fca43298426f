#!/usr/bin/env bash
# The Python package's tests: a virtual environment in build-py/venv with the pinned test
# requirements (numpy, ml_dtypes, pytest, torch, transformers), `pip install .` of this checkout,
# then pytest over python/tests with every optional dependency required (none may be skipped).
# Run by scripts/test.sh; safe to rerun (the venv and the CMake build in build-py/ are reused).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${ATTUNE_PYTHON:-python3}"
venv="$root/build-py/venv"

stamp() { date +%s; }
t0=$(stamp)
if [ ! -x "$venv/bin/python" ]; then
  echo "test-python: creating $venv with $("$python" --version 2>&1)"
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r python/requirements-test.txt
t1=$(stamp)
echo "test-python: requirements ready in $((t1 - t0)) s"
CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-build-isolation .
t2=$(stamp)
echo "test-python: pip install . in $((t2 - t1)) s"
# From python/tests, so `import attune` is the installed package, not the source folder.
cd python/tests
ATTUNE_REQUIRE_OPTIONAL=1 "$venv/bin/python" -m pytest -q -rs "$@"
echo "test-python: tests ran in $(($(stamp) - t2)) s"
