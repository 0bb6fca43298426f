#!/usr/bin/env python3
"""Summarises the tuner's proofs.

tune_proof.py OUT: scripts/tune-proof.sh, how close smart and random searches get to the exhaustive
best (re-measured fresh and interleaved by `attune tune-check`) and with what share of the
evaluations. Writes OUT/proof.md, OUT/proof.json and OUT/proof.png.

tune_proof.py --auto OUT: scripts/tune-auto-proof.sh, the rebuilt `auto` (compiled tuned table)
against `default` (built-in heuristic) on the tuned shapes (check-tuned.json) and on held-out
shapes (check-heldout.json), and whether `auto` ran each tuned shape's own entry, per storage
type (exit 1 if not). Writes OUT/auto.md, OUT/auto.json and OUT/auto.png.

tune_proof.py --runtime OUT: scripts/tune-runtime-proof.sh, `auto` through the run-time tuning file
(ATTUNE_TUNING, no rebuild) on held-out shapes, against each shape's own exhaustive best and the
default, re-measured fresh and interleaved (check-heldout.json); exit 1 unless the median of auto /
own best is >= 0.95. Writes OUT/runtime.md and OUT/runtime.json."""
import json
import math
import re
import statistics
import sys
from pathlib import Path


def pyplot():
    """matplotlib's pyplot on the Agg backend, or None without matplotlib (the figure is skipped)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def emit(path, md):
    """Writes the markdown lines to path and prints them."""
    path.write_text("\n".join(md) + "\n")
    print("\n".join(md))


def choices(log):
    out = {}
    for line in Path(log).read_text().splitlines():
        rec = json.loads(line)
        if rec.get("type") == "choice":
            out[rec["shape"]] = rec
    return out


def main(out_dir):
    out = Path(out_dir)
    check = json.loads((out / "check.json").read_text())
    logs = {name: choices(out / f"{name}.json") for name in ("exhaustive", "smart", "random")}
    seconds = {name: int((out / f"{name}.seconds").read_text()) for name in logs}
    rows = []
    for shape in check:
        t = {e["label"].removesuffix(".json"): e["median_s"] for e in shape["entries"] if e["verified"]}
        if "exhaustive" not in t:
            continue
        row = {"shape": shape["shape"], "speed_vs_exhaustive": {}, "evaluations": {}, "space": None}
        for name in ("smart", "random", "default"):
            if name in t:
                row["speed_vs_exhaustive"][name] = t["exhaustive"] / t[name]
        for name, log in logs.items():
            rec = log.get(shape["shape"])
            if rec:
                row["evaluations"][name] = rec["evaluations"]
                row["space"] = rec["space"]
                row.setdefault("choice", {})[name] = rec["candidate"]
        rows.append(row)
    if not rows:
        sys.exit("error: no shape with an exhaustive choice in check.json")

    def stats(name):
        speed = [r["speed_vs_exhaustive"][name] for r in rows if name in r["speed_vs_exhaustive"]]
        frac = [r["evaluations"][name] / r["space"] for r in rows if name in r["evaluations"] and r["space"]]
        return {
            "shapes": len(speed),
            "median_speed": statistics.median(speed),
            "worst_speed": min(speed),
            "within_5pct": sum(s >= 1 / 1.05 for s in speed),
            "median_eval_fraction": statistics.median(frac) if frac else None,
            "total_evaluations": sum(r["evaluations"].get(name, 0) for r in rows),
            "seconds": seconds.get(name),
        }

    summary = {name: stats(name) for name in ("smart", "random", "default")}
    summary["exhaustive"] = {"total_evaluations": sum(r["evaluations"].get("exhaustive", 0) for r in rows),
                             "seconds": seconds["exhaustive"]}
    (out / "proof.json").write_text(json.dumps({"summary": summary, "shapes": rows}, indent=1) + "\n")

    md = ["| shape | space | smart evals | smart / exhaustive speed | random / exhaustive | default / exhaustive |",
          "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        s = r["speed_vs_exhaustive"]
        md.append(f"| {r['shape']} | {r['space']} | {r['evaluations'].get('smart', '-')} "
                  f"({100 * r['evaluations'].get('smart', 0) / r['space']:.1f}%) | {s.get('smart', math.nan):.3f} | "
                  f"{s.get('random', math.nan):.3f} | {s.get('default', math.nan):.3f} |")
    md.append("")
    for name in ("smart", "random", "default"):
        st = summary[name]
        frac = f", median {100 * st['median_eval_fraction']:.1f}% of the evaluations" if st["median_eval_fraction"] else ""
        took = f", {st['seconds']} s" if st["seconds"] is not None else ""
        md.append(f"- **{name}**: median speed {st['median_speed']:.3f} of the exhaustive best, worst "
                  f"{st['worst_speed']:.3f}; within 5% on {st['within_5pct']}/{st['shapes']} shapes{frac}"
                  f" ({st['total_evaluations']} evaluations in all{took})")
    ex = summary["exhaustive"]
    md.append(f"- **exhaustive**: {ex['total_evaluations']} evaluations, {ex['seconds']} s")
    emit(out / "proof.md", md)

    plt = pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.27
    names = [("smart", "tab:blue"), ("random", "tab:orange"), ("default", "tab:gray")]
    for i, (name, color) in enumerate(names):
        ax.bar([x + (i - 1) * width for x in range(len(rows))],
               [r["speed_vs_exhaustive"].get(name, 0) for r in rows], width, label=name, color=color)
    ax.axhline(1 / 1.05, color="red", linestyle="--", linewidth=1, label="5% below exhaustive")
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([r["shape"].replace("_dv", "\n_dv").replace("b1_", "") for r in rows], fontsize=6, rotation=45,
                       ha="right")
    ax.set_ylabel("speed relative to the exhaustive choice")
    ax.set_ylim(0, max(1.2, max(max(r["speed_vs_exhaustive"].values()) for r in rows) * 1.05) + 0.2)
    ax.set_title("Tuner strategies vs exhaustive search (fresh interleaved re-measurement)")
    ax.legend(fontsize=8, loc="upper center", ncol=4)
    fig.tight_layout()
    fig.savefig(out / "proof.png", dpi=120)


SHAPE = re.compile(r"^b\d+_hq(\d+)_hkv(\d+)_sq(\d+)_skv(\d+)_dk(\d+)_dv\d+_causal(\d)(.*)$")


def table_key(shape):
    """The tuned table's key of a shape name: d_k, causal, decode, gqa, log2 buckets, storage types
    (the name's suffix: '', '_bf16', '_kvbf16', ...)."""
    hq, hkv, sq, skv, dk, causal, types = SHAPE.match(shape).groups()
    hq, hkv, sq, skv = int(hq), int(hkv), int(sq), int(skv)
    return int(dk), causal, sq <= 16, hq != hkv, sq.bit_length() - 1, skv.bit_length() - 1, types


def auto_rows(path):
    rows = []
    for shape in json.loads(Path(path).read_text()):
        t = {e["label"]: e for e in shape["entries"] if e["verified"]}
        if "default" not in t or "auto" not in t:
            continue
        rows.append({"shape": shape["shape"], "dtype": shape.get("dtype", "fp32"),
                     "kv_dtype": shape.get("kv_dtype", shape.get("dtype", "fp32")),
                     "auto": t["auto"]["candidate"], "default": t["default"]["candidate"],
                     "choice": t.get("tune.json", {}).get("candidate"),
                     "speedup": t["default"]["median_s"] / t["auto"]["median_s"],
                     "spread_auto": t["auto"]["spread"], "spread_default": t["default"]["spread"],
                     "gflops_auto": shape["flops"] / t["auto"]["median_s"] * 1e-9})
    return rows


def own_entries(rows):
    """Per storage types: (tuned shapes whose rebuilt `auto` ran that shape's own choice, shapes
    checked), over the shapes that alone hold their table key (a shared key keeps one choice).
    Also the shapes where auto ran something else: a dispatch that crossed keys or types."""
    keys = {}
    for r in rows:
        keys.setdefault(table_key(r["shape"]), []).append(r)
    per_type, wrong = {}, []
    for r in rows:
        if r["choice"] is None or len(keys[table_key(r["shape"])]) > 1:
            continue
        types = r["dtype"] if r["kv_dtype"] == r["dtype"] else f"{r['dtype']} Q/O, {r['kv_dtype']} K/V"
        own, total = per_type.get(types, (0, 0))
        per_type[types] = (own + (r["auto"] == r["choice"]), total + 1)
        if r["auto"] != r["choice"]:
            wrong.append(r["shape"])
    return per_type, wrong


def main_auto(out_dir):
    out = Path(out_dir)
    sets = {}
    for name in ("tuned", "heldout"):
        path = out / f"check-{name}.json"
        if path.exists():
            sets[name] = auto_rows(path)
    if not sets.get("tuned"):
        sys.exit(f"error: no verified auto/default pair in {out / 'check-tuned.json'}")
    summary = {}
    for name, rows in sets.items():
        sp = [r["speedup"] for r in rows]
        summary[name] = {"shapes": len(sp), "median_speedup": statistics.median(sp), "worst_speedup": min(sp),
                         "best_speedup": max(sp),
                         "geomean_speedup": math.exp(sum(math.log(x) for x in sp) / len(sp)),
                         "at_least_default": sum(x >= 1.0 for x in sp),
                         "within_noise_of_default": sum(x >= 0.97 for x in sp)}
    per_type, wrong = own_entries(sets["tuned"])
    summary["own_entry"] = {types: {"own": own, "shapes": total} for types, (own, total) in per_type.items()}
    seconds = out / "tune.seconds"
    if seconds.exists():
        summary["tune_seconds"] = int(seconds.read_text())
    (out / "auto.json").write_text(json.dumps({"summary": summary, "shapes": sets}, indent=1) + "\n")

    md = []
    for name, rows in sets.items():
        md += [f"**{'tuned shapes' if name == 'tuned' else 'held-out shapes (nearest bucket)'}**", "",
               "| shape | auto (tuned table) | default (heuristic) | auto / default speed | auto GFLOP/s |",
               "| --- | --- | --- | --- | --- |"]
        for r in rows:
            md.append(f"| {r['shape']} | {r['auto']} | {r['default']} | {r['speedup']:.3f} "
                      f"(spread {100 * r['spread_auto']:.1f}% / {100 * r['spread_default']:.1f}%) | "
                      f"{r['gflops_auto']:.1f} |")
        st = summary[name]
        md += ["", f"- median x{st['median_speedup']:.3f}, geometric mean x{st['geomean_speedup']:.3f}, worst "
                   f"x{st['worst_speedup']:.3f}, best x{st['best_speedup']:.3f}; auto >= default on "
                   f"{st['at_least_default']}/{st['shapes']} shapes, within 3% or better on "
                   f"{st['within_noise_of_default']}/{st['shapes']}", ""]
    md.append("- the rebuilt `auto` ran each tuned shape's own entry (its storage types, its choice): " +
              ", ".join(f"{types} {own}/{total}" for types, (own, total) in per_type.items()))
    if "tune_seconds" in summary:
        md.append(f"- the smart tune took {summary['tune_seconds']} s")
    emit(out / "auto.md", md)
    if wrong:
        sys.exit("error: the rebuilt auto did not run the tuned entry of: " + ", ".join(wrong))

    plt = pyplot()
    if plt is None:
        return
    rows = [(r, "tab:blue") for r in sets["tuned"]] + [(r, "tab:orange") for r in sets.get("heldout", [])]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.bar(range(len(rows)), [r["speedup"] for r, _ in rows], color=[c for _, c in rows])
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.axhline(1.1, color="red", linestyle="--", linewidth=1, label="1.1x")
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([r["shape"].replace("_dv", "\n_dv").replace("b1_", "") for r, _ in rows], fontsize=6,
                       rotation=45, ha="right")
    ax.set_ylabel("auto speed / default speed")
    ax.set_title("Rebuilt with the tuned header: auto vs the built-in heuristic (blue: tuned, orange: held-out)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "auto.png", dpi=120)


def main_runtime(out_dir):
    out = Path(out_dir)
    rows = []
    for shape in json.loads((out / "check-heldout.json").read_text()):
        t = {e["label"]: e for e in shape["entries"] if e["verified"]}
        if not {"auto", "default", "heldout.json"} <= t.keys():
            continue
        best = t["heldout.json"]
        rows.append({"shape": shape["shape"], "auto": t["auto"]["candidate"], "best": best["candidate"],
                     "auto_vs_best": best["median_s"] / t["auto"]["median_s"],
                     "default_vs_best": best["median_s"] / t["default"]["median_s"],
                     "spread_auto": t["auto"]["spread"], "spread_best": best["spread"]})
    if not rows:
        sys.exit(f"error: no verified auto/default/own-best triple in {out / 'check-heldout.json'}")
    ratios = [r["auto_vs_best"] for r in rows]
    summary = {"shapes": len(rows), "median_auto_vs_best": statistics.median(ratios), "worst_auto_vs_best": min(ratios),
               "median_default_vs_best": statistics.median(r["default_vs_best"] for r in rows),
               "at_least_095": sum(x >= 0.95 for x in ratios)}
    (out / "runtime.json").write_text(json.dumps({"summary": summary, "shapes": rows}, indent=1) + "\n")
    md = ["| held-out shape | auto (run-time table, nearest bucket) | own exhaustive best | auto / best speed | "
          "default / best speed |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        md.append(f"| {r['shape']} | {r['auto']} | {r['best']} | {r['auto_vs_best']:.3f} (spread "
                  f"{100 * r['spread_auto']:.1f}% / {100 * r['spread_best']:.1f}%) | {r['default_vs_best']:.3f} |")
    md += ["", f"- auto through the run-time table: median x{summary['median_auto_vs_best']:.3f} of the own best, "
               f"worst x{summary['worst_auto_vs_best']:.3f}, >= 0.95 on {summary['at_least_095']}/{len(rows)} shapes; "
               f"the default: median x{summary['median_default_vs_best']:.3f}"]
    emit(out / "runtime.md", md)
    if summary["median_auto_vs_best"] < 0.95:
        sys.exit("error: the median held-out shape reaches less than 95% of its own best through the run-time table")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--auto":
        main_auto(sys.argv[2])
    elif len(sys.argv) == 3 and sys.argv[1] == "--runtime":
        main_runtime(sys.argv[2])
    elif len(sys.argv) == 2:
        main(sys.argv[1])
    else:
        sys.exit("usage: tune_proof.py OUT_DIR | tune_proof.py --auto OUT_DIR | tune_proof.py --runtime OUT_DIR")
