#!/usr/bin/env bash
# The Python package's tests: scripts/python-env.sh (venv, pinned requirements, pip install .),
# then pytest over python/tests with every optional dependency required (torch and transformers
# tests may not be skipped). Run by scripts/test.sh; extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/python-env.sh"
t0=$(date +%s)
# From python/tests, so `import attune` is the installed package.
cd "$root/python/tests"
ATTUNE_REQUIRE_OPTIONAL=1 "$root/build-py/venv/bin/python" -m pytest -q -rs -p no:cacheprovider "$@"
echo "test-python: tests ran in $(($(date +%s) - t0)) s"
