"""The regression set: which attune_bench benchmarks the gate times and with which flags. One
definition for scripts/regress.sh (through `attune_regress suite`), paired sessions and the proof.

1-thread flash and simd on the machine's default ISA, four fp32 shapes (small and mid prefill,
causal, grouped-query decode): 8 benchmarks, 10 randomly interleaved repetitions of >= 0.1 s each,
about 12 s per run on 2 cores. One thread because a co-runner halves 2-thread results on small VMs.
"""
from __future__ import annotations

import os
import re
import subprocess

KERNELS = ("flash", "simd")
SHAPES = (
    "hq:8/hkv:8/sq:128/skv:128/d:128/causal:0/dt:fp32",
    "hq:8/hkv:8/sq:512/skv:512/d:64/causal:0/dt:fp32",
    "hq:8/hkv:8/sq:512/skv:512/d:128/causal:1/dt:fp32",
    "hq:32/hkv:8/sq:1/skv:8192/d:128/causal:0/dt:fp32",
)
REPETITIONS = 10
MIN_TIME = "0.1"
ANY_ISA = "[a-z0-9_]+"


def default_isa(bench: str):
    """The ISA attune dispatches to by default (`attune info` next to the bench binary, which
    honours ATTUNE_ISA), or None when that cannot be asked."""
    tool = os.path.join(os.path.dirname(os.path.abspath(bench)), "attune")
    if not os.access(tool, os.X_OK):
        return None
    try:
        out = subprocess.run([tool, "info"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"^isa default:\s*(\S+)", out, re.M)
    return m.group(1) if m else None


def bench_filter(isa=None) -> str:
    shapes = "|".join(SHAPES)  # no regex metacharacters in the names
    return "^attention/(%s)/%s/b:1/(%s)/t:1/" % ("|".join(KERNELS), isa or ANY_ISA, shapes)


def bench_flags(isa=None, repetitions: int = REPETITIONS) -> list:
    """attune_bench flags for one run of the regression set (output flags not included)."""
    return ["--preset", "quick", "--no-probes", "--benchmark_filter=" + bench_filter(isa),
            "--benchmark_min_time=" + MIN_TIME, "--benchmark_repetitions=%d" % repetitions,
            "--benchmark_enable_random_interleaving=true", "--benchmark_report_aggregates_only=false"]
