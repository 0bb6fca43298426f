"""The README's Python snippets are these files (python/examples/); they must run and stay in
the README verbatim."""

import os
import subprocess
import sys

import pytest

from conftest import require

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")


def example(name):
    with open(os.path.join(ROOT, "python", "examples", name)) as f:
        return f.read()


@pytest.mark.parametrize("name", ["quickstart.py", "hf_backend.py"])
def test_example_is_in_the_readme_and_runs(name, tmp_path):
    if name == "hf_backend.py":
        require("transformers")
    code = example(name)
    with open(os.path.join(ROOT, "README.md")) as f:
        assert code in f.read(), f"README.md no longer shows python/examples/{name} verbatim"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
