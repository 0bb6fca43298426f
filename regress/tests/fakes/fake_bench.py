"""Stands in for attune_bench in the tests: writes a Google Benchmark JSON for the regression
set's 8 names (as attune_bench spells them, with dt:fp32), with seeded noise, in a few milliseconds.

Flags read: --benchmark_out=PATH (or two words), --benchmark_repetitions=N, --block-q N or
--block-kv N (a "real" knob: 20% slower), --inject-slowdown PCT (PCT% slower, as the real
bench's test-only switch). Everything else is accepted and ignored. Environment:
  FAKE_BENCH_LOG      append one JSON line per call: {"argv": [...], "tag": $FAKE_TAG, "call": n}
  FAKE_BENCH_SLOW     multiply every time by this factor
  FAKE_BENCH_SLOW_CALLS  comma-separated call numbers (1-based) that FAKE_BENCH_SLOW applies to
  FAKE_BENCH_FAIL     exit 3 with a message instead of running
  FAKE_BENCH_COUNTER  file holding the number of calls so far (default: next to the log)
"""
import json
import math
import os
import random
import sys

NAMES = ["attention/%s/avx512/b:1/%s/t:1/real_time" % (k, s) for k in ("flash", "simd") for s in (
    "hq:8/hkv:8/sq:128/skv:128/d:128/causal:0/dt:fp32", "hq:8/hkv:8/sq:512/skv:512/d:64/causal:0/dt:fp32",
    "hq:8/hkv:8/sq:512/skv:512/d:128/causal:1/dt:fp32", "hq:32/hkv:8/sq:1/skv:8192/d:128/causal:0/dt:fp32")]


def flag(argv, name, default=None):
    """The flag's last value, as Google Benchmark reads repeated flags."""
    value = default
    for i, a in enumerate(argv):
        if a.startswith(name + "="):
            value = a.split("=", 1)[1]
        elif a == name and i + 1 < len(argv):
            value = argv[i + 1]
    return value


def main(argv):
    if os.environ.get("FAKE_BENCH_FAIL"):
        print("error: fake bench told to fail", file=sys.stderr)
        return 3
    out = flag(argv, "--benchmark_out")
    reps = int(flag(argv, "--benchmark_repetitions", "1"))
    counter = os.environ.get("FAKE_BENCH_COUNTER") or (os.environ.get("FAKE_BENCH_LOG", "/nonexistent") + ".n")
    call = 1
    if os.environ.get("FAKE_BENCH_LOG") or os.environ.get("FAKE_BENCH_COUNTER"):
        try:
            with open(counter) as f:
                call = int(f.read().strip() or 0) + 1
        except FileNotFoundError:
            call = 1
        with open(counter, "w") as f:
            f.write(str(call))
    if os.environ.get("FAKE_BENCH_LOG"):
        with open(os.environ["FAKE_BENCH_LOG"], "a") as f:
            f.write(json.dumps({"argv": argv, "tag": os.environ.get("FAKE_TAG"), "call": call}) + "\n")
    factor = 1.2 if flag(argv, "--block-kv") or flag(argv, "--block-q") else 1.0
    if flag(argv, "--inject-slowdown"):
        factor *= 1.0 + float(flag(argv, "--inject-slowdown")) / 100.0
    slow_calls = os.environ.get("FAKE_BENCH_SLOW_CALLS")
    if os.environ.get("FAKE_BENCH_SLOW") and (not slow_calls or str(call) in slow_calls.split(",")):
        factor *= float(os.environ["FAKE_BENCH_SLOW"])
    rng = random.Random(1000 + call)
    rows = []
    for rep in range(reps):
        for i, name in enumerate(NAMES):
            t = (1.0 + i) * factor * math.exp(rng.gauss(0.0, 0.01))
            rows.append({"name": name, "run_name": name, "run_type": "iteration", "repetitions": reps,
                         "repetition_index": rep, "threads": 1, "iterations": 10, "real_time": t,
                         "cpu_time": t, "time_unit": "ms"})
    for name in NAMES:  # aggregates, as with --benchmark_report_aggregates_only=false
        rows.append({"name": name + "_median", "run_name": name, "run_type": "aggregate",
                     "aggregate_name": "median", "real_time": 1.0, "cpu_time": 1.0, "time_unit": "ms"})
    context = {"date": "2026-11-25T10:00:%02dZ" % (call % 60), "num_cpus": 2, "load_avg": [0.1 * call, 0.1, 0.1],
               "attune_build_type": "Release", "attune_compiler": "GNU 12.2.0", "attune_flags": " -O3 -DNDEBUG",
               "attune_git_revision": os.environ.get("FAKE_REVISION", "abcdef123456"), "attune_version": "0.1.0",
               "cores": "2", "cpu_model": "AMD EPYC", "isa_default": "avx512",
               "isa_runnable": "avx512,avx2,sse4_2,scalar", "preset": "quick",
               "bench_tiles": "block_q=%s block_kv=%s" % (flag(argv, "--block-q", "0"),
                                                                 flag(argv, "--block-kv", "0"))}
    if out:
        with open(out, "w") as f:
            json.dump({"context": context, "benchmarks": rows}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
