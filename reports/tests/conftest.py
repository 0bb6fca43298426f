# Shared helpers of the report tests: synthetic attune bench JSON with known numbers, and a
# runner for `python3 -m attune_report` as a subprocess (the CLI contract is exit codes + stderr).
import json
import os
import subprocess
import sys

import pytest

REPORTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(REPORTS, "tests", "data")
sys.path.insert(0, REPORTS)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

CONTEXT = {
    "date": "2026-11-25T09:17:38Z", "host_name": "testhost", "num_cpus": 2,
    "attune_version": "0.1.0", "attune_git_revision": "abc1234", "attune_compiler": "GNU 12.2.0",
    "attune_flags": " -O3 -DNDEBUG", "attune_build_type": "Release", "cpu_model": "Synthetic CPU 9000",
    "cores": "2", "isa_runnable": "avx2,scalar", "isa_default": "avx2", "preset": "quick",
    "peak_gflops_avx2_t1": "100.0", "peak_gflops_avx2_t2": "200.0",
    "peak_gflops_scalar_t1": "15.0", "peak_gflops_scalar_t2": "30.0",
    "triad_gbps_t1": "20.0", "triad_gbps_t2": "30.0",
}
# The one number the tests look for: flash/avx2 on s512 d64 h8 t1 (non-causal) is the best
# kernel there at 87.64 GFLOP/s, i.e. "87.6" and 88% of the 100 GFLOP/s peak, 4.00x gemm.
KEY_SHAPE = dict(seq=512, d=64, causal=0, threads=1)
KEY_GFLOPS = 87.64
KEY_GEMM = 21.91


def name_of(kernel, isa, b, hq, hkv, sq, skv, d, causal, t, dt=None):
    """A bench name; without dt (as attune_bench wrote them before the element type was a
    dimension, i.e. fp32) unless dt is given."""
    return "attention/%s/%s/b:%d/hq:%d/hkv:%d/sq:%d/skv:%d/d:%d/causal:%d%s/t:%d" % (
        kernel, isa, b, hq, hkv, sq, skv, d, causal, "/dt:" + dt if dt else "", t)


def row(kernel, isa, gflops, *, seq=None, sq=None, skv=None, d=64, causal=0, threads=1, b=1, hq=8, hkv=8,
        peak=None, dt=None, **extra):
    """One Google Benchmark iteration row with counters consistent with the shape."""
    sq = sq or seq
    skv = skv or seq
    pairs = sq * skv if not causal else sum(max(0, min(skv, i + skv - sq + 1)) for i in range(sq))
    flops = 4.0 * b * hq * pairs * d
    nbytes = (2.0 if dt in ("bf16", "fp16") else 4.0) * (2 * b * hq * sq * d + 2 * b * hkv * skv * d)
    seconds = flops / (gflops * 1e9)
    name = name_of(kernel, isa, b, hq, hkv, sq, skv, d, causal, threads, dt) + "/real_time"
    out = {"name": name, "run_name": name, "run_type": "iteration", "repetitions": 1, "repetition_index": 0,
           "threads": 1, "iterations": 10, "real_time": seconds * 1e3, "cpu_time": seconds * 1e3,
           "time_unit": "ms", "FLOPS": gflops * 1e9, "bytes_per_second": nbytes / seconds}
    if peak:
        out["peak_frac"] = gflops / peak
    out.update(extra)
    return out


def gflops_of(kernel, isa, seq, d, causal, threads):
    """A made-up but plausible landscape: flash/avx2 fastest, threads help, causal costs."""
    if (kernel, isa) == ("flash", "avx2") and dict(seq=seq, d=d, causal=causal, threads=threads) == KEY_SHAPE:
        return KEY_GFLOPS
    if kernel == "gemm" and dict(seq=seq, d=d, causal=causal, threads=threads) == KEY_SHAPE:
        return KEY_GEMM
    base = {("flash", "avx2"): 80.0, ("simd", "avx2"): 60.0, ("flash", "scalar"): 10.0, ("naive", "scalar"): 5.0,
            ("gemm", "scalar"): 20.0}[(kernel, isa)]
    scale = (1.0 + 0.05 * (seq // 128)) * (1.0 + d / 1024.0) * (0.7 if causal else 1.0)
    return round(base * scale * (1.0 if threads == 1 else 1.8 * threads / 2), 3)


def synthetic_bench(with_gemm=True, seqs=(128, 256, 512), dks=(64, 128), failed=True):
    peaks = {1: 100.0, 2: 200.0}
    rows = []
    for causal in (0, 1):
        for d in dks:
            for seq in seqs:
                variants = [("flash", "avx2"), ("simd", "avx2"), ("flash", "scalar"), ("naive", "scalar")]
                variants += [("gemm", "scalar")] if with_gemm else []
                for kernel, isa in variants:
                    for t in ((1, 2) if kernel in ("flash", "gemm") else (1,)):
                        rows.append(row(kernel, isa, gflops_of(kernel, isa, seq, d, causal, t), seq=seq, d=d,
                                        causal=causal, threads=t, peak=peaks[t]))
    # A decode shape (grouped-query, seq_q 1): only in the summary and roofline.
    rows.append(row("flash", "avx2", 15.0, sq=1, skv=4096, d=128, hq=32, hkv=8, threads=1, peak=100.0))
    if failed:
        failed_row = row("naive", "scalar", 1.0, seq=4096, d=128)
        for k in ("FLOPS", "bytes_per_second"):
            del failed_row[k]
        failed_row.update(error_occurred=True, error_message="time budget exhausted")
        rows.append(failed_row)
    return {"context": dict(CONTEXT), "benchmarks": rows}


# The typed sample: fp32 and bf16 (plus one fp16) of the same kernels on the same shapes, with
# known ratios. flash/avx2 on s2048 d128 h8 t1 runs 80 GFLOP/s in fp32 and 100 in bf16: 1.25x.
TYPED_CONTEXT = dict(CONTEXT, isa_runnable="avx512_bf16,avx2,scalar", bf16_dot_gflops_t1="400.0",
                     bf16_dot_gflops_t2="800.0", read16_gbps_t1="18.0", read16_gbps_t2="28.0")
TYPED = {  # (kernel, isa, seq_q, seq_kv, hq, hkv, threads): {dt: GFLOP/s}
    ("flash", "avx2", 2048, 2048, 8, 8, 1): {"fp32": 80.0, "bf16": 100.0, "fp16": 88.0},
    ("flash", "avx2", 2048, 2048, 8, 8, 2): {"fp32": 150.0, "bf16": 180.0},
    ("gemm", "avx2", 2048, 2048, 8, 8, 1): {"fp32": 40.0, "bf16": 32.0},
    ("flash", "avx2", 512, 512, 8, 8, 1): {"fp32": 70.0, "bf16": 84.0},
    ("gemm", "avx2", 512, 512, 8, 8, 1): {"fp32": 35.0, "bf16": 30.0},
    ("flash", "avx2", 1, 8192, 32, 8, 1): {"fp32": 10.0, "bf16": 18.0},
    ("flash", "avx512_bf16", 2048, 2048, 8, 8, 1): {"bf16": 200.0},  # bf16 only: no fp32 twin
}


def synthetic_typed_bench():
    """fp32 rows named the old way (no dt:) next to dt:bf16 / dt:fp16 rows, peak_frac as
    attune_bench computes it except for avx512_bf16 (left to the report's own probe choice)."""
    peaks = {1: 100.0, 2: 200.0}
    rows = []
    for (kernel, isa, sq, skv, hq, hkv, t), by_dt in TYPED.items():
        for dt, g in by_dt.items():
            peak = None if isa == "avx512_bf16" else peaks[t]
            rows.append(row(kernel, isa, g, sq=sq, skv=skv, d=128, hq=hq, hkv=hkv, threads=t, peak=peak,
                            dt=None if dt == "fp32" else dt))
    return {"context": dict(TYPED_CONTEXT), "benchmarks": rows}


def synthetic_pytorch(bench):
    """The peer file bench/pytorch_sdpa.py writes: same shapes, three repetitions, no peak_frac."""
    rows = []
    for b in bench["benchmarks"]:
        if not b["name"].startswith("attention/flash/avx2/") or b.get("error_occurred"):
            continue
        name = b["name"].replace("/flash/avx2/", "/pytorch/native/")
        for rep, factor in enumerate((0.5, 0.55, 0.45)):  # median 0.5 of flash/avx2
            r = dict(b, name=name, run_name=name, repetitions=3, repetition_index=rep,
                     FLOPS=b["FLOPS"] * factor, bytes_per_second=b["bytes_per_second"] * factor)
            r.pop("peak_frac", None)
            rows.append(r)
    return {"context": dict(bench["context"], peer="pytorch", torch_version="2.1.0"), "benchmarks": rows}


def write_json(path, doc):
    with open(path, "w") as f:
        json.dump(doc, f)
    return str(path)


def run_report(*args, timeout=120):
    env = dict(os.environ, PYTHONPATH=REPORTS, PYTHONDONTWRITEBYTECODE="1", MPLBACKEND="Agg")
    return subprocess.run([sys.executable, "-m", "attune_report", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)


def assert_ok(r):
    assert r.returncode == 0, "exit %d, stderr: %r" % (r.returncode, r.stderr)


def assert_error(r, code, fragment=None):
    """A clean failure: the exit code and exactly one 'error: ...' line, no traceback."""
    assert r.returncode == code, "exit %d, expected %d; stderr: %r" % (r.returncode, code, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    if fragment:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="session")
def sample_path():
    return os.path.join(DATA, "sample_bench.json")
