"""Synthetic attune_bench JSON and seeded noise for the regression tests."""
import os

import numpy as np

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")

CONTEXT = {
    "date": "2026-11-25T09:17:38Z",
    "host_name": "vm",
    "attune_build_type": "Release",
    "attune_compiler": "GNU 12.2.0",
    "attune_flags": " -O3 -DNDEBUG",
    "attune_git_revision": "e0eece32debc",
    "attune_version": "0.1.0",
    "cores": "2",
    "cpu_model": "AMD EPYC",
    "isa_default": "avx512",
    "isa_runnable": "avx512,avx2,sse4_2,scalar",
    "preset": "quick",
}


def bench_name(kernel="flash", seq=512, d=64, causal=0, threads=1):
    return "attention/%s/avx512/b:1/hq:8/hkv:8/sq:%d/skv:%d/d:%d/causal:%d/t:%d/real_time" % (
        kernel, seq, seq, d, causal, threads)


def bench_json(times: dict, unit="ms", aggregates=True, **context):
    """Google Benchmark JSON as attune_bench writes it with --benchmark_repetitions: one
    iteration row per repetition (interleaved across benchmarks), then aggregates."""
    ctx = dict(CONTEXT)
    ctx.update(context)
    rows = []
    names = list(times)
    longest = max(len(v) for v in times.values())
    for rep in range(longest):
        for name in names:
            if rep < len(times[name]):
                rows.append({"name": name, "run_name": name, "run_type": "iteration",
                             "repetitions": len(times[name]), "repetition_index": rep, "threads": 1,
                             "iterations": 10, "real_time": float(times[name][rep]),
                             "cpu_time": float(times[name][rep]), "time_unit": unit})
    if aggregates:
        for name in names:
            v = np.asarray(times[name], dtype=float)
            for agg, value in (("mean", v.mean()), ("median", np.median(v)), ("stddev", v.std()), ("cv", 0.1)):
                rows.append({"name": name + "_" + agg, "run_name": name, "run_type": "aggregate",
                             "aggregate_name": agg, "real_time": float(value), "cpu_time": float(value),
                             "time_unit": unit})
    return {"context": ctx, "benchmarks": rows}


def noisy(rng, center, n, sigma=0.01):
    """n repetitions around `center` with multiplicative lognormal noise."""
    return center * np.exp(rng.normal(0.0, sigma, n))


def run_of(times: dict, path="<synthetic>", **context):
    """A loaded run without a file: times in seconds per benchmark name."""
    from attune_regress.benchjson import BenchRun
    ctx = dict(CONTEXT)
    ctx.update(context)
    return BenchRun(path=path, context=ctx, times={k: [float(t) for t in v] for k, v in times.items()})
