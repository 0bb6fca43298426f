#!/usr/bin/env python3
"""PyTorch's CPU scaled_dot_product_attention as a peer, on the shapes of an attune bench run.

Reads the attune bench JSON (for its shapes, element types and thread counts), times
torch.nn.functional.scaled_dot_product_attention on the same shapes with tensors of the same
type (dt:bf16 -> torch.bfloat16, dt:fp16 -> torch.float16; names without dt: are fp32), and
writes Google Benchmark-compatible JSON with names attention/pytorch/native/... so the report
merges it. Without torch it prints why and exits 0 (the peer is optional); a type this torch
cannot run on the CPU becomes a skipped row (error_occurred), as attune_bench reports its own.

usage: pytorch_sdpa.py BENCH.json OUT.json [--min-time SECONDS] [--repetitions N]
"""
import argparse
import json
import os
import sys
import time

# The bench-name parser is the regression gate's (regress/attune_regress/benchname.py).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "regress"))
from attune_regress.benchname import BenchName, parse  # noqa: E402

# attune's dtype names: the torch dtype (by attribute name: torch is imported only when present)
# and the bytes per element, for bytes_per_second in storage sizes as attune_bench counts them.
DTYPES = {"fp32": ("float32", 4), "bf16": ("bfloat16", 2), "fp16": ("float16", 2)}


def shapes_of(names):
    """[(b, hq, hkv, sq, skv, d, causal, threads, dtype)] of the attune benchmarks in `names`, each
    once, in the order the peer runs them: as before dt: existed, a shape's 16-bit types after
    its fp32 run."""
    out = set()
    for n in map(parse, names):
        if n and not n.var and n.dtype in DTYPES:  # plain attention only: SDPA has no attune variants
            out.add((n.batch, n.heads_q, n.heads_kv, n.seq_q, n.seq_kv, n.d_k, int(n.causal), n.threads, n.dtype))
    return sorted(out, key=lambda s: s[:8] + (list(DTYPES).index(s[8]),))


def name_of(b, hq, hkv, sq, skv, d, causal, threads, dt):
    return BenchName("pytorch", "native", b, hq, hkv, sq, skv, d, bool(causal), threads, dt,
                     suffix="/real_time").format()


def storage_bytes(b, hq, hkv, sq, skv, d, dt):
    """Q read and O written (heads_q x seq_q rows), K and V read (heads_kv x seq_kv rows), once."""
    return DTYPES[dt][1] * (b * hq * sq * d * 2 + b * hkv * skv * d * 2)


def flops(b, hq, sq, skv, d, causal):
    if causal:
        pairs = sum(max(0, min(skv, i + skv - sq + 1)) for i in range(sq))
    else:
        pairs = sq * skv
    return 4.0 * b * hq * pairs * d


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bench_json")
    ap.add_argument("out_json")
    ap.add_argument("--min-time", type=float, default=0.2)
    ap.add_argument("--repetitions", type=int, default=3)
    args = ap.parse_args()
    try:
        import torch  # noqa: F401
        import torch.nn.functional as F
    except ImportError:
        print("pytorch peer: skipped (torch is not importable; pip install torch to add it)", file=sys.stderr)
        return 0
    try:
        with open(args.bench_json) as f:
            bench = json.load(f)
        names = [b["name"] for b in bench["benchmarks"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"error: cannot read bench JSON {args.bench_json}: {e}", file=sys.stderr)
        return 1
    shapes = shapes_of(names)
    results = []
    for i, (b, hq, hkv, sq, skv, d, causal, threads, dt) in enumerate(shapes):
        torch.set_num_threads(threads)
        # Drawn in float32 and converted once, as attune_bench does.
        dtype = getattr(torch, DTYPES[dt][0])
        q = torch.randn(b, hq, sq, d).to(dtype)
        k = torch.randn(b, hkv, skv, d).to(dtype)
        v = torch.randn(b, hkv, skv, d).to(dtype)
        if hkv != hq:  # older torch has no enable_gqa: expand K/V heads as users do
            k = k.repeat_interleave(hq // hkv, dim=1)
            v = v.repeat_interleave(hq // hkv, dim=1)
        # PyTorch's is_causal aligns the first query with the first key; attune aligns the last
        # with the last. They agree when seq_q == seq_kv; otherwise pass attune's mask explicitly.
        mask = None
        if causal and sq != skv:
            qi = torch.arange(sq).unsqueeze(1)
            kj = torch.arange(skv).unsqueeze(0)
            mask = kj <= qi + (skv - sq)
        run = lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=bool(causal and mask is None))
        name = name_of(b, hq, hkv, sq, skv, d, causal, threads, dt)
        try:
            run()
        except RuntimeError as e:  # e.g. a torch without CPU kernels for this type
            results.append({"name": name, "run_name": name, "run_type": "iteration", "error_occurred": True,
                            "error_message": "torch %s: %s" % (dt, str(e).splitlines()[0] if str(e) else "failed")})
            print(f"pytorch peer: {i + 1}/{len(shapes)} {name} skipped ({e})", file=sys.stderr)
            continue
        for rep in range(args.repetitions):
            iters, start = 0, time.perf_counter()
            while time.perf_counter() - start < args.min_time:
                run()
                iters += 1
            seconds = (time.perf_counter() - start) / iters
            fl = flops(b, hq, sq, skv, d, causal)
            results.append({"name": name, "run_name": name, "run_type": "iteration", "repetitions": args.repetitions,
                            "repetition_index": rep, "iterations": iters, "real_time": seconds * 1e3,
                            "cpu_time": seconds * 1e3, "time_unit": "ms", "FLOPS": fl / seconds,
                            "bytes_per_second": storage_bytes(b, hq, hkv, sq, skv, d, dt) / seconds})
        print(f"pytorch peer: {i + 1}/{len(shapes)} {name}", file=sys.stderr)
    out = {"context": dict(bench.get("context", {}), peer="pytorch", torch_version=torch.__version__),
           "benchmarks": results}
    tmp = args.out_json + ".tmp"
    with open(tmp, "w") as f:
        json.dump(out, f, indent=1)
    os.replace(tmp, args.out_json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
