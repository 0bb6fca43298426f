"""attune_bench's contract: stable names, counters and provenance in the JSON it writes."""
import json
import os
import re
import subprocess

import pytest

BENCH = os.environ.get("ATTUNE_BENCH_BIN")
NAME = re.compile(
    r"^attention/(?P<kernel>[a-z0-9_]+)/(?P<isa>[a-z0-9_]+)/b:(\d+)/hq:(\d+)/hkv:(\d+)/"
    r"sq:(\d+)/skv:(\d+)/d:(\d+)/causal:([01])/dt:(?P<dt>fp32|bf16|fp16)/t:(\d+)(/real_time)?$")
STORAGE = {"fp32": 4, "bf16": 2, "fp16": 2}
# The small fp32 scalar shapes (both masks), and the quick preset's smallest bf16 row, which runs
# on the best two ISAs that take bf16 (every build has at least one: scalar widens in registers).
FILTER = ("^attention/(flash|simd)/scalar/b:1/hq:8/hkv:8/sq:128/skv:128/d:64/causal:.*/t:1|"
          "^attention/flash/[a-z0-9_]+/b:1/hq:8/hkv:8/sq:512/skv:512/d:128/causal:0/dt:bf16/t:1/")


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@pytest.fixture(scope="module")
def run():
    if not BENCH:
        pytest.fail("ATTUNE_BENCH_BIN is not set (ctest sets it)")
    out = subprocess.run([BENCH, "--benchmark_filter=" + FILTER, "--benchmark_min_time=0.01", "--benchmark_format=json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout), out.stderr


def test_names_parse_and_cover_both_masks_and_types(run):
    data, _ = run
    names = [b["name"] for b in data["benchmarks"]]
    causal, dts = set(), {}
    for n in names:
        m = NAME.match(n)
        assert m, n
        causal.add(m.group(9))
        dts.setdefault(m.group("dt"), []).append(n)
    assert causal == {"0", "1"}
    assert len(dts["fp32"]) == 4 and all("/scalar/" in n for n in dts["fp32"])
    assert 1 <= len(dts["bf16"]) <= 2 and set(dts) == {"fp32", "bf16"}


def test_counters_are_consistent_with_the_flop_count(run):
    data, _ = run
    for b in data["benchmarks"]:
        m = NAME.match(b["name"])
        heads, heads_kv, sq, skv, d = (int(m.group(i)) for i in (4, 5, 6, 7, 8))
        pairs = sq * skv if m.group(9) == "0" else sq * (sq + 1) // 2
        flops = 4 * heads * pairs * d
        seconds = b["real_time"] * {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}[b["time_unit"]]
        assert b["FLOPS"] == pytest.approx(flops / seconds, rel=1e-6)
        # Q, K, V read and O written once, in their storage size
        nbytes = STORAGE[m.group("dt")] * (2 * heads * sq * d + 2 * heads_kv * skv * d)
        assert b["bytes_per_second"] == pytest.approx(nbytes / seconds, rel=1e-6)
        # FLOPS over the probe of the same run named by peak_frac_probe's rule (a timing bound
        # would flake: a probe taken while the machine is loaded reads low).
        threads = m.group(11)
        if m.group("isa") == "amx":
            probe = "amx_gflops_t" + threads
        elif m.group("isa") == "avx512_bf16" and m.group("dt") == "bf16" and m.group("kernel") != "gemm":
            probe = "bf16_dot_gflops_t" + threads
        else:
            probe = "peak_gflops_%s_t%s" % (m.group("isa"), threads)
        assert b["peak_frac"] == pytest.approx(b["FLOPS"] / (float(data["context"][probe]) * 1e9), rel=1e-4)


def test_context_carries_probes_and_provenance(run):
    data, stderr = run
    ctx = data["context"]
    for key in ("attune_version", "attune_git_revision", "attune_compiler", "attune_flags", "cpu_model",
                "cores", "isa_runnable", "isa_default", "preset", "date", "triad_gbps_t1", "read16_gbps_t1",
                "peak_frac_probe", "attune_kernels", "isa_compiled"):
        assert key in ctx, key
    # The build's lists, which readers order by: the runnable ISAs are among the compiled ones, in
    # the same order, and every benchmark's kernel and ISA is listed.
    compiled = ctx["isa_compiled"].split(",")
    runnable = ctx["isa_runnable"].split(",")
    assert [i for i in compiled if i in runnable] == runnable
    for b in data["benchmarks"]:
        m = NAME.match(b["name"])
        assert m.group("kernel") in ctx["attune_kernels"].split(",") and m.group("isa") in compiled
    peaks = [k for k in ctx if k.startswith("peak_gflops_")]
    assert any(k.endswith("_t1") for k in peaks)
    assert all(float(ctx[k]) > 0 for k in peaks)
    assert float(ctx["read16_gbps_t1"]) > 0
    # The bf16 dot-product probe runs exactly where the CPU has AVX512-BF16 (x86 builds).
    flags = cpu_flags()
    if {"avx512f", "avx512_bf16"} <= flags:
        assert float(ctx["bf16_dot_gflops_t1"]) > 0
        cores = int(ctx["cores"])
        assert cores == 1 or float(ctx["bf16_dot_gflops_t%d" % cores]) > 0
    elif flags:
        assert "bf16_dot_gflops_t1" not in ctx
    assert "probes:" in stderr  # progress is visible


def test_the_pytorch_peer_reads_dt_and_keeps_its_order():
    """bench/pytorch_sdpa.py's name handling, without torch (the peer is optional)."""
    import importlib.util
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench", "pytorch_sdpa.py")
    spec = importlib.util.spec_from_file_location("pytorch_sdpa", path)
    peer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peer)
    old = "attention/flash/avx2/b:1/hq:8/hkv:8/sq:512/skv:512/d:64/causal:0/t:2/real_time"
    names = [old.replace("/t:2", "/dt:bf16/t:1"), old, old.replace("/t:2", "/dt:fp32/t:1"),
             old.replace("/t:2", "/dt:fp16/t:1"), "attention/flash/avx2/bad"]
    shapes = peer.shapes_of(names)
    assert shapes == [(1, 8, 8, 512, 512, 64, 0, 1, "fp32"), (1, 8, 8, 512, 512, 64, 0, 1, "bf16"),
                      (1, 8, 8, 512, 512, 64, 0, 1, "fp16"), (1, 8, 8, 512, 512, 64, 0, 2, "fp32")]
    assert peer.name_of(*shapes[1]) == names[0].replace("/flash/avx2/", "/pytorch/native/")
    assert peer.storage_bytes(1, 8, 8, 512, 512, 64, "bf16") * 2 == peer.storage_bytes(1, 8, 8, 512, 512, 64, "fp32")


def test_bad_flags_are_usage_errors():
    for args in (["--preset", "nonesuch"], ["--budget", "abc"], ["--benchmark_nonesuch=1"]):
        out = subprocess.run([BENCH, *args], capture_output=True, text=True, timeout=60)
        assert out.returncode == 2, (args, out.returncode, out.stderr)


def listed(*args):
    out = subprocess.run([BENCH, "--no-probes", "--benchmark_list_tests", *args], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return [NAME.match(n) for n in out.stdout.split()]


def test_user_shapes_replace_the_preset_and_keep_the_name_format():
    rows = listed("--shape", "b=2,hq=4,hkv=2,sq=64,d=32,causal=1", "--shape", "hq=2,sq=1,skv=300,d=16,dt=bf16",
                  "--kernels", "flash,simd", "--threads", "1,2")
    assert rows and all(rows)
    shapes = {m.group(3, 4, 5, 6, 7, 8, 9, "dt") for m in rows}
    assert shapes == {("2", "4", "2", "64", "64", "32", "1", "fp32"), ("1", "2", "2", "1", "300", "16", "0", "bf16")}
    assert {m.group("kernel") for m in rows} == {"flash", "simd"}
    # One ISA per kernel (its best); simd is unthreaded, so only flash runs at 2 threads.
    per_kernel = {}
    for m in rows:
        per_kernel.setdefault((m.group("kernel"), m.group("dt")), set()).add(m.group("isa"))
    assert all(len(isas) == 1 for isas in per_kernel.values())
    threads = {(m.group("kernel"), m.group(11)) for m in rows}
    assert threads == {("flash", "1"), ("flash", "2"), ("simd", "1")}


def test_a_model_expands_to_prefill_and_decode_shapes():
    rows = listed("--model", "llama3-8b", "--kernels", "flash", "--threads", "1", "--dtype", "bf16")
    shapes = {(int(m.group(6)), int(m.group(7)), m.group(9)) for m in rows}
    assert all(m.group(4, 5, 8, "dt") == ("32", "8", "128", "bf16") for m in rows)
    assert any(sq == skv > 1 and c == "1" for sq, skv, c in shapes)   # causal prefill
    assert any(sq == 1 and skv > 1 and c == "0" for sq, skv, c in shapes)  # decoding


def test_bad_shape_and_model_flags_are_usage_errors():
    for args in (["--shape", "hq=3,hkv=2,sq=4,d=8"], ["--shape", "hq=2,sq=4"], ["--shape", "hq=2,sq=4,d=8,x=1"],
                 ["--shape", "hq=2,sq=-4,d=8"], ["--model", "nonesuch"], ["--kernels", "nonesuch"],
                 ["--threads", "0"], ["--dtype", "fp64"]):
        out = subprocess.run([BENCH, "--no-probes", *args], capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and out.stderr.startswith("error: "), (args, out.returncode, out.stderr)


def test_injected_slowdown_is_recorded_and_checked():
    """--inject-slowdown PCT (the regression proofs' CPU-independent slowdown): a bad value is a
    usage error, and a run with it says so in its context, so it is never mistaken for a clean
    run. (What it costs is measured by scripts/regress-proof.sh, not asserted in a timed test.)"""
    for bad in ("0", "-5", "abc", "101", ""):
        out = subprocess.run([BENCH, "--inject-slowdown", bad], capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and out.stderr.startswith("error: --inject-slowdown"), (bad, out.stderr)
    shape = ["--no-probes", "--shape", "hq=2,sq=64,d=32", "--kernels", "flash", "--threads", "1",
             "--benchmark_min_time=0.01", "--benchmark_format=json"]
    for extra, expected in (([], None), (["--inject-slowdown", "7.5"], "7.5")):
        out = subprocess.run([BENCH, *shape, *extra], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        ctx = json.loads(out.stdout)["context"]
        if expected is None:
            assert "bench_injected_slowdown" not in ctx
        else:
            assert ctx["bench_injected_slowdown"].startswith(expected)
