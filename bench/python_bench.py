#!/usr/bin/env python3
"""Speed of the Python package (run by scripts/bench-python.sh; numbers are ratios within one run).

overhead: the time of one call on a tiny problem (1 head, seq 16, d 64, fp32, one thread) through
  attune.attention (numpy, torch), the attune::sdpa torch op and torch's own SDPA, interleaved in
  rounds with the C++ API's own call timed in a C++ loop in the same process (and attune_bench's
  median of the same call, passed in, as an outside check).
model: a randomly initialised Llama-style model (4 layers, hidden 1024, 16 query / 4 K/V heads,
  seq 2048, CPU) forward time with attn_implementation="attune" against "sdpa", and the share of
  each forward spent in the attention function.

usage: python_bench.py [--cpp-ns NS] [--rounds N] [--model-reps N] [--skip-model] [--json OUT]
"""
import argparse
import copy
import json
import os
import statistics
import sys
import time

import numpy as np


def summary(samples):
    """median and the relative spread (min..max over the median) of a list of seconds."""
    med = statistics.median(samples)
    return {"median": med, "min": min(samples), "max": max(samples), "n": len(samples)}


def per_call(fn, window=0.02, pieces=10):
    """Seconds per call: the median over `pieces` batches of calls that together fill `window`
    seconds. Short batches and their median keep a co-runner's burst from moving the sample (one
    20 ms batch was hit far more often than the C++ loop's few milliseconds)."""
    fn()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < window / pieces / 4:
        fn()
        n += 1
    batch = max(1, n * 4)
    times = []
    for _ in range(pieces):
        start = time.perf_counter()
        for _ in range(batch):
            fn()
        times.append((time.perf_counter() - start) / batch)
    return statistics.median(times)


def cpp_per_call(time_calls, window=0.02, pieces=10):
    """The same for the C++ loop: `time_calls(n)` returns seconds per call of n calls timed in C++."""
    estimate = time_calls(100)
    batch = max(1, int(window / pieces / estimate))
    return statistics.median(time_calls(batch) for _ in range(pieces))


def overhead(rounds):
    import attune
    import torch
    from attune import _attune

    import attune.torch as ops

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    q = rng.standard_normal((1, 1, 16, 64)).astype(np.float32)
    tq = torch.from_numpy(q)
    out = np.empty_like(q)
    F = torch.nn.functional
    cases = {
        "C++ attune::attention (loop in C++)": None,
        "attune.attention (numpy)": lambda: attune.attention(q, q, q, kernel="flash", threads=1),
        "attune.attention (numpy, out=)": lambda: attune.attention(q, q, q, kernel="flash", threads=1, out=out),
        "attune.attention (torch)": lambda: attune.attention(tq, tq, tq, kernel="flash", threads=1),
        "attune.torch.sdpa (eager: direct)": lambda: ops.sdpa(tq, tq, tq),
        "torch.ops.attune.sdpa (dispatcher)": lambda: torch.ops.attune.sdpa(tq, tq, tq, None, False, None),
        "torch SDPA": lambda: F.scaled_dot_product_attention(tq, tq, tq),
    }
    samples = {name: [] for name in cases}
    for _ in range(rounds):  # interleaved, so drift and co-runners reach every case alike
        for name, fn in cases.items():
            if fn is None:
                samples[name].append(cpp_per_call(lambda n: _attune._time_cpp_calls(q, q, q, out, "flash", 1, n)))
            else:
                samples[name].append(per_call(fn))
    torch.set_num_threads(threads)
    return {name: summary(s) for name, s in samples.items()}


def model_forward(reps, threads):
    import torch
    import transformers
    from transformers import AttentionInterface

    import attune.transformers as backend
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    cfg = transformers.LlamaConfig(vocab_size=32000, hidden_size=1024, intermediate_size=2816, num_hidden_layers=4,
                                   num_attention_heads=16, num_key_value_heads=4, max_position_embeddings=4096)
    torch.manual_seed(0)
    models = {}
    for impl in ("sdpa", backend.NAME):
        models[impl] = transformers.AutoModelForCausalLM.from_config(copy.deepcopy(cfg), attn_implementation=impl).eval()
    models[backend.NAME].load_state_dict(models["sdpa"].state_dict())
    ids = torch.randint(0, cfg.vocab_size, (1, 2048), generator=torch.Generator().manual_seed(1))

    spent = {"t": 0.0}

    def timed(fn):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent["t"] += time.perf_counter() - t0
        return wrapper

    AttentionInterface.register("sdpa", timed(sdpa_attention_forward))
    AttentionInterface.register(backend.NAME, timed(backend.attention_forward))
    torch.set_num_threads(threads)  # attune's calls take all cores: the model part is run per count
    times = {impl: [] for impl in models}
    shares = {impl: [] for impl in models}
    with torch.no_grad():
        logits = {impl: m(ids).logits for impl, m in models.items()}  # warm-up, and the agreement
        for _ in range(reps):
            for impl, m in models.items():
                spent["t"] = 0.0
                t0 = time.perf_counter()
                with attune_threads(threads):
                    m(ids)
                dt = time.perf_counter() - t0
                times[impl].append(dt)
                shares[impl].append(spent["t"] / dt)
    AttentionInterface.register("sdpa", sdpa_attention_forward)
    backend.register()
    diff = (logits[backend.NAME] - logits["sdpa"]).abs().max().item()
    return {impl: dict(summary(times[impl]), attention_share=statistics.median(shares[impl]),
                       attention_seconds=statistics.median(s * t for s, t in zip(shares[impl], times[impl])))
            for impl in models} | {"max_abs_logit_diff": diff, "threads": torch.get_num_threads()}


class attune_threads:
    """Runs attune's calls in the block on `threads` threads (the backend passes no thread count)."""

    def __init__(self, threads):
        import attune

        self.attune, self.threads, self.saved = attune, threads, None

    def __enter__(self):
        self.saved = self.attune.attention
        original = self.saved

        def limited(*args, **kwargs):
            kwargs.setdefault("threads", self.threads)
            return original(*args, **kwargs)

        self.attune.attention = limited

    def __exit__(self, *exc):
        self.attune.attention = self.saved


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpp-ns", type=float, help="the C++ API's time per call on the tiny problem (ns)")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--model-reps", type=int, default=5)
    ap.add_argument("--skip-model", action="store_true")
    ap.add_argument("--model-threads", default="1,%d" % os.cpu_count(), help="thread counts of the model runs")
    ap.add_argument("--json")
    args = ap.parse_args()
    result = {"overhead": overhead(args.rounds)}
    print("== per-call time, tiny problem (1 head, seq 16, d 64, fp32, 1 thread), "
          f"{args.rounds} interleaved rounds: median [min, max] us")
    torch_us = result["overhead"]["torch SDPA"]["median"] * 1e6
    cpp_us = result["overhead"]["C++ attune::attention (loop in C++)"]["median"] * 1e6
    if args.cpp_ns:
        result["overhead"]["C++ attune_bench (other process)"] = {"median": args.cpp_ns * 1e-9}
    for name, s in result["overhead"].items():
        us = s["median"] * 1e6
        spread = f"[{s['min'] * 1e6:6.2f}, {s['max'] * 1e6:6.2f}]" if "min" in s else " " * 16
        vs_cpp = f"  {us / cpp_us:5.2f}x C++"
        print(f"  {name:36s} {us:7.2f} {spread}{vs_cpp}  {us / torch_us:5.2f}x torch SDPA")
    if not args.skip_model:
        result["model"] = {}
        for threads in sorted({int(t) for t in args.model_threads.split(",")}):
            m = result["model"][threads] = model_forward(args.model_reps, threads)
            print(f"== Llama-style model forward (4 layers, hidden 1024, 16/4 heads, seq 2048, {threads} threads), "
                  f"{args.model_reps} interleaved reps: median [min, max] s")
            for impl in ("sdpa", "attune"):
                s = m[impl]
                print(f"  {impl:8s} {s['median']:.3f} [{s['min']:.3f}, {s['max']:.3f}]  attention "
                      f"{s['attention_seconds']:.3f} s = {100 * s['attention_share']:.1f}% of the forward")
            print(f"  attune / sdpa: forward {m['attune']['median'] / m['sdpa']['median']:.3f}x (best runs "
                  f"{m['attune']['min'] / m['sdpa']['min']:.3f}x), attention "
                  f"{m['attune']['attention_seconds'] / m['sdpa']['attention_seconds']:.3f}x; "
                  f"max |logit difference| {m['max_abs_logit_diff']:.2e}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
