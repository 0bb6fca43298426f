"""The docs' code snippets are compiled or run examples: the Python ones are these files
(python/examples/), which must run and stay verbatim in the page that shows them; the C++ ones
are lines of tests/consumer/main.cpp, which ctest builds against the installed package."""

import os
import re
import subprocess
import sys

import pytest

from conftest import require

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")

# Each example and the page that shows it.
PAGES = {"quickstart.py": "README.md", "hf_backend.py": os.path.join("docs", "python.md"),
         "variants_and_quantized_kv.py": os.path.join("docs", "python.md"),
         "paged_decode.py": os.path.join("docs", "python.md")}


def read(*path):
    with open(os.path.join(ROOT, *path)) as f:
        return f.read()


@pytest.mark.parametrize("name", list(PAGES))
def test_example_is_in_the_docs_and_runs(name, tmp_path):
    if name == "hf_backend.py":
        require("transformers")
    code = read("python", "examples", name)
    page = PAGES[name]
    assert code in read(page), f"{page} no longer shows python/examples/{name} verbatim"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()


def consumer_blocks(text):
    """The ```cpp blocks whose introducing paragraph names tests/consumer/main.cpp."""
    for m in re.finditer(r"([^\n]*(?:\n[^\n]+)*)\n\n```cpp\n(.*?)\n```", text, re.S):
        if "tests/consumer/main.cpp" in m.group(1):
            yield m.group(2)


@pytest.mark.parametrize("page", ["README.md", os.path.join("docs", "variants.md")])
def test_cpp_snippets_are_lines_of_the_consumer(page):
    consumer = {line.strip() for line in read("tests", "consumer", "main.cpp").splitlines()}
    blocks = list(consumer_blocks(read(page)))
    assert blocks, f"{page} shows no C++ block introduced as tests/consumer/main.cpp"
    for block in blocks:
        for line in block.splitlines():
            assert not line.strip() or line.strip() in consumer, (
                f"{page}: '{line.strip()}' is not a line of tests/consumer/main.cpp (keep the two in sync)")
