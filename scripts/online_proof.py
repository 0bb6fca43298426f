#!/usr/bin/env python3
"""Online tuning's proof from Python: a 20-shape sequence of calls (the tune-runtime proof's 12
prefill shapes and 8 grouped-query decode shapes) with attune.set_tuning("online").

1. Online: the first call of each shape (a new table key) runs the race; its wall time, the
   race's own time (online_tuning_stats) and a steady call's time are recorded, and the first
   call's extra cost is checked against the documented bound (budget + one call of the slowest
   candidate started, bounded here by 2.5x the default's call, the race's cut).
2. Fresh, interleaved re-measurement (9 rounds, one sample = median call time in a >= 20 ms window):
   `auto` with the online winners (saved by the race, loaded as a table), `auto` with the
   pre-tuned table (`attune tune --strategy smart` of the same shapes: TABLE), and the default.
Usage: online_proof.py TABLE OUT_DIR [--budget-ms 200]. Writes OUT_DIR/online.md and online.json.
Run with the Python that has attune installed (build-py/venv*/bin/python)."""
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import attune

PREFILL = [(8, 8, s, s, d, c) for s in (128, 512, 1024) for d in (64, 128) for c in (False, True)]
DECODE = [(32, 8, 1, s, d, False) for s in (1024, 2048, 4096, 8192) for d in (64, 128)]
SHAPES = PREFILL + DECODE


def name(shape):
    hq, hkv, sq, skv, d, causal = shape
    return f"hq{hq}_hkv{hkv}_sq{sq}_skv{skv}_dk{d}{'_causal' if causal else ''}"


def tensors(shape, seed=0):
    hq, hkv, sq, skv, d, _ = shape
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((hq, sq, d), dtype=np.float32)
    k = rng.standard_normal((hkv, skv, d), dtype=np.float32)
    v = rng.standard_normal((hkv, skv, d), dtype=np.float32)
    return q, k, v, np.empty_like(q)


def call(shape, t):
    q, k, v, out = t
    attune.attention(q, k, v, causal=shape[5], out=out)


def sample(shape, t, window=0.02):
    """Median call time in a >= 20 ms window after one warm-up call."""
    call(shape, t)
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < window or len(times) < 3:
        t0 = time.perf_counter()
        call(shape, t)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(table, out_dir, budget_ms):
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    saved = out / "online.tuning.json"
    saved.unlink(missing_ok=True)
    data = {shape: tensors(shape) for shape in SHAPES}
    attune.load_tuning("")
    # Each shape's default call time (no table, no race) first, for the bound.
    default_call = {shape: sample(shape, data[shape]) for shape in SHAPES}

    attune.set_tuning("online", budget_ms=budget_ms, save=saved)
    first = []
    for shape in SHAPES:
        before = attune.online_tuning_stats()
        t0 = time.perf_counter()
        call(shape, data[shape])
        wall = time.perf_counter() - t0
        after = attune.online_tuning_stats()
        steady = sample(shape, data[shape])
        race_ms = after["total_ms"] - before["total_ms"]
        bound_ms = budget_ms + 2.5 * default_call[shape] * 1e3 + steady * 1e3
        first.append({"shape": name(shape), "first_call_ms": wall * 1e3, "race_ms": race_ms,
                      "extra_ms": (wall - steady) * 1e3, "bound_ms": bound_ms,
                      "races": after["races"] - before["races"], "changed": after["changed"] - before["changed"],
                      "choice": attune.resolve(*data[shape][:3], causal=shape[5])})
    stats = attune.online_tuning_stats()
    attune.set_tuning("table")

    modes = {"online": str(saved), "table": str(table), "default": ""}
    times = {m: {shape: [] for shape in SHAPES} for m in modes}
    choices = {}
    for rnd in range(9):
        for m, path in (list(modes.items()) if rnd % 2 == 0 else list(reversed(modes.items()))):
            attune.load_tuning(path)
            for shape in SHAPES:
                if rnd == 0:
                    c = attune.resolve(*data[shape][:3], causal=shape[5])
                    choices.setdefault(m, {})[name(shape)] = "%s/%s/bq%d/bkv%d/t%d/s%d" % (
                        c["kernel"], c["isa"], c["block_q"], c["block_kv"], c["threads"], c["kv_splits"])
                times[m][shape].append(sample(shape, data[shape]))
    attune.load_tuning("")
    rows = []
    for shape in SHAPES:
        med = {m: statistics.median(times[m][shape]) for m in modes}
        rows.append({"shape": name(shape), "online_vs_table": med["table"] / med["online"],
                     "online_vs_default": med["default"] / med["online"],
                     "table_vs_default": med["default"] / med["table"],
                     **{f"{m}_choice": choices[m][name(shape)] for m in modes}})
    info = attune.info()
    summary = {
        "cpu": info["cpu"], "machine": info["machine"], "isa_default": info["isa_default"],
        "version": info["version"], "git_revision": info["git_revision"], "compiler": info["compiler"],
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "budget_ms": budget_ms,
        "loadavg": os.getloadavg(),
        "races": stats["races"], "candidates": stats["candidates"], "rejected": stats["rejected"],
        "changed": stats["changed"], "max_race_ms": stats["max_ms"], "total_race_ms": stats["total_ms"],
        "max_first_call_extra_ms": max(r["extra_ms"] for r in first),
        "within_bound": sum(r["extra_ms"] <= r["bound_ms"] for r in first),
        "median_online_vs_table": statistics.median(r["online_vs_table"] for r in rows),
        "worst_online_vs_table": min(r["online_vs_table"] for r in rows),
        "median_online_vs_default": statistics.median(r["online_vs_default"] for r in rows),
        "median_table_vs_default": statistics.median(r["table_vs_default"] for r in rows),
    }
    (out / "online.json").write_text(json.dumps({"summary": summary, "first_calls": first, "shapes": rows},
                                                indent=1, default=str) + "\n")
    md = [f"Online tuning on {info['cpu']} ({info['machine']['cores']} cores, {info['machine']['isas']}), "
          f"attune {info['version']} {info['git_revision']}, budget {budget_ms:.0f} ms, load average "
          f"{summary['loadavg'][0]:.2f} at the end.", "",
          "| shape | first call ms (race ms) | extra ms / bound ms | online choice | table choice | "
          "online / table speed | online / default | table / default |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for f, r in zip(first, rows):
        md.append(f"| {r['shape']} | {f['first_call_ms']:.1f} ({f['race_ms']:.1f}) | {f['extra_ms']:.1f} / "
                  f"{f['bound_ms']:.1f} | {r['online_choice']} | {r['table_choice']} | {r['online_vs_table']:.3f} | "
                  f"{r['online_vs_default']:.3f} | {r['table_vs_default']:.3f} |")
    md += ["", f"- {summary['races']} races, {summary['candidates']} candidates timed, {summary['rejected']} rejected "
               f"by the check, {summary['changed']} chose other than the default; longest race "
               f"{summary['max_race_ms']:.1f} ms, total {summary['total_race_ms']:.0f} ms; first-call extra cost "
               f"within the bound on {summary['within_bound']}/{len(first)} shapes (max "
               f"{summary['max_first_call_extra_ms']:.1f} ms)",
           f"- after the first call, online `auto` vs the pre-tuned table: median x{summary['median_online_vs_table']:.3f}, "
           f"worst x{summary['worst_online_vs_table']:.3f}; vs the default: median x{summary['median_online_vs_default']:.3f} "
           f"(the pre-tuned table vs the default: x{summary['median_table_vs_default']:.3f})"]
    (out / "online.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    args = sys.argv[1:]
    budget = 200.0
    if "--budget-ms" in args:
        i = args.index("--budget-ms")
        budget = float(args[i + 1])
        del args[i:i + 2]
    if len(args) != 2:
        sys.exit("usage: online_proof.py TABLE OUT_DIR [--budget-ms 200]")
    main(args[0], args[1], budget)
