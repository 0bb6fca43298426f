"""Trend plots of the history: one PNG per tracked benchmark (per fingerprint), the median over
the recorded runs with the min-max band, segment levels and change points marked."""
from __future__ import annotations

import glob
import json
import os
import re

from . import changepoint, history
from .benchjson import write_atomic


def safe_name(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", name.replace(":", ""))
    return s.strip("_") or "benchmark"


def _series(records):
    """name -> records in run order (by date; records of one date keep file order)."""
    by_name = {}
    for i, r in enumerate(records):
        by_name.setdefault(r["name"], []).append((str(r.get("date", "")), i, r))
    return {n: [r for _, _, r in sorted(v, key=lambda t: (t[0], t[1]))] for n, v in by_name.items()}


def plot(name: str, recs: list, points: list, path: str, title_note: str = "") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = list(range(len(recs)))
    med = [r["median"] for r in recs]
    lo = [r["min"] for r in recs]
    hi = [r["max"] for r in recs]
    unit = recs[0].get("unit", "ms")
    fig, ax = plt.subplots(figsize=(9, 4.2), dpi=100)
    ax.fill_between(x, lo, hi, color="tab:blue", alpha=0.15, linewidth=0, label="min-max of repetitions")
    ax.plot(x, med, "o-", color="tab:blue", markersize=3.5, linewidth=1.2, label="median")
    bounds = [0] + [p.index for p in points] + [len(recs)]
    levels = [points[0].before] + [p.after for p in points] if points else []
    for i, level in enumerate(levels):
        ax.hlines(level, bounds[i] - 0.4, bounds[i + 1] - 0.6, colors="black", linewidth=1.0,
                  linestyles="dotted")
    for p in points:
        color = "tab:red" if p.change > 0 else "tab:green"
        ax.axvline(p.index - 0.5, color=color, linestyle="--", linewidth=1.2)
        ax.annotate("%+.1f%%\n%s" % (100 * p.change, str(recs[p.index].get("git_revision", ""))[:12]),
                    xy=(p.index - 0.5, 1.0), xycoords=("data", "axes fraction"), va="top", ha="left",
                    fontsize=7.5, color=color, xytext=(3, -3), textcoords="offset points")
    step = max(1, len(recs) // 8)
    ticks = x[::step]
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(recs[i].get("date", ""))[:10] for i in ticks], rotation=30, ha="right", fontsize=7.5)
    ax.set_ylabel("real time per call (%s)" % unit)
    ax.set_title(name + title_note, fontsize=8.5)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7.5, loc="lower left")
    ax.set_xlim(-0.6, max(0.6, len(recs) - 0.4))
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, format="png")
    plt.close(fig)
    os.replace(tmp, path)


def trend(history_dir: str, out_dir: str, log=print):
    """Plot every benchmark of every DIR/*.jsonl; OUT/trend.json lists the change points
    (index: 0-based position in the run order). Returns (pngs written, problems, summary)."""
    files = sorted(glob.glob(os.path.join(history_dir, "*.jsonl")))
    os.makedirs(out_dir, exist_ok=True)
    written, problems, summary = [], [], []
    for f in files:
        key = os.path.basename(f)[:-len(".jsonl")]
        h = history.read(f)
        problems += h.problems
        note = "  [%s]" % key[:8] if len(files) > 1 else ""
        for name, recs in sorted(_series(h.records).items()):
            points = changepoint.detect([r["median"] for r in recs])
            suffix = "__" + key[:8] if len(files) > 1 else ""
            png = os.path.join(out_dir, safe_name(name) + suffix + ".png")
            plot(name, recs, points, png, note)
            written.append(png)
            entry = {"name": name, "fingerprint": key, "runs": len(recs), "png": os.path.basename(png),
                     "change_points": [{"index": p.index, "date": recs[p.index].get("date"),
                                        "git_revision": recs[p.index].get("git_revision"),
                                        "before": p.before, "after": p.after, "change": p.change}
                                       for p in points]}
            summary.append(entry)
            for p in points:
                log("%s: %+.1f%% from run %d of %d (%s, %s)" % (name, 100 * p.change, p.index + 1, len(recs),
                                                               recs[p.index].get("date", "?"),
                                                               recs[p.index].get("git_revision", "?")))
    write_atomic(os.path.join(out_dir, "trend.json"), (json.dumps(summary, indent=2) + "\n").encode())
    return written, problems, summary
