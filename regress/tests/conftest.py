"""The package on sys.path (tests run without installing it) and a JSON-writing fixture."""
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
