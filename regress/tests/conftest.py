"""The package on sys.path (tests run without installing it), a JSON-writing fixture, and a bin
folder of stand-ins (attune_bench, attune, valgrind) for the tests of paired, icount and the CI script."""
import json
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
for p in (os.path.dirname(HERE), HERE):
    if p not in sys.path:
        sys.path.insert(0, p)


@pytest.fixture
def write_json(tmp_path):
    counter = [0]

    def write(data, name=None):
        counter[0] += 1
        path = tmp_path / (name or "run%d.json" % counter[0])
        path.write_text(data if isinstance(data, str) else json.dumps(data))
        return str(path)

    return write


FAKES = os.path.join(HERE, "fakes")


@pytest.fixture
def fake_bin(tmp_path, monkeypatch):
    """tmp/bin with attune_bench, attune and valgrind: shell wrappers around tests/fakes/*.py."""
    d = tmp_path / "bin"
    d.mkdir()
    for name, script in (("attune_bench", "fake_bench.py"), ("attune", "fake_attune.py"),
                         ("valgrind", "fake_valgrind.py")):
        w = d / name
        w.write_text('#!/bin/sh\nexec "%s" "%s" "$@"\n' % (sys.executable, os.path.join(FAKES, script)))
        w.chmod(0o755)
    # icount runs valgrind in a fixed environment; let the stand-in's controls through.
    monkeypatch.setenv("ATTUNE_ICOUNT_PASS_ENV", "FAKE_VALGRIND_LOG,FAKE_IR_SCALE")
    return d
