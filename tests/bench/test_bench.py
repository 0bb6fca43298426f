"""attune_bench's contract: stable names, counters and provenance in the JSON it writes."""
import json
import os
import re
import subprocess

import pytest

BENCH = os.environ.get("ATTUNE_BENCH_BIN")
NAME = re.compile(
    r"^attention/(?P<kernel>[a-z0-9_]+)/(?P<isa>[a-z0-9_]+)/b:(\d+)/hq:(\d+)/hkv:(\d+)/"
    r"sq:(\d+)/skv:(\d+)/d:(\d+)/causal:([01])/t:(\d+)(/real_time)?$")


@pytest.fixture(scope="module")
def run():
    if not BENCH:
        pytest.fail("ATTUNE_BENCH_BIN is not set (ctest sets it)")
    out = subprocess.run(
        [BENCH, "--benchmark_filter=^attention/(flash|simd)/scalar/b:1/hq:8/hkv:8/sq:128/skv:128/d:64/causal:.*/t:1",
         "--benchmark_min_time=0.01", "--benchmark_format=json"],
        capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout), out.stderr


def test_names_parse_and_cover_both_masks(run):
    data, _ = run
    names = [b["name"] for b in data["benchmarks"]]
    assert len(names) == 4
    causal = set()
    for n in names:
        m = NAME.match(n)
        assert m, n
        causal.add(m.group(9))
    assert causal == {"0", "1"}


def test_counters_are_consistent_with_the_flop_count(run):
    data, _ = run
    for b in data["benchmarks"]:
        m = NAME.match(b["name"])
        heads, sq, skv, d = (int(m.group(i)) for i in (4, 6, 7, 8))
        pairs = sq * skv if m.group(9) == "0" else sq * (sq + 1) // 2
        flops = 4 * heads * pairs * d
        seconds = b["real_time"] * {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}[b["time_unit"]]
        assert b["FLOPS"] == pytest.approx(flops / seconds, rel=1e-6)
        assert b["bytes_per_second"] > 0
        assert 0 < b["peak_frac"] < 1.5  # against the probe of the same run


def test_context_carries_probes_and_provenance(run):
    data, stderr = run
    ctx = data["context"]
    for key in ("attune_version", "attune_git_revision", "attune_compiler", "attune_flags", "cpu_model",
                "cores", "isa_runnable", "isa_default", "preset", "date", "triad_gbps_t1"):
        assert key in ctx, key
    peaks = [k for k in ctx if k.startswith("peak_gflops_")]
    assert any(k.endswith("_t1") for k in peaks)
    assert all(float(ctx[k]) > 0 for k in peaks)
    assert "probes:" in stderr  # progress is visible


def test_bad_flags_are_usage_errors():
    for args in (["--preset", "nonesuch"], ["--budget", "abc"], ["--benchmark_nonesuch=1"]):
        out = subprocess.run([BENCH, *args], capture_output=True, text=True, timeout=60)
        assert out.returncode == 2, (args, out.returncode, out.stderr)
