"""Every figure of the report, drawn with matplotlib's Agg backend into PNG files. Each function
writes its PNG(s) into a directory and returns [Figure]; it returns [] when the data holds
nothing for it to show. Colour is the ISA and marker the kernel, the same in every figure."""
import math
import os
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import TwoSlopeNorm  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator  # noqa: E402

from .bench import BF16_DOT_ISA, PEERS, dtype_key, dtype_speedups, fraction_of_peak, label_of, speedups  # noqa: E402
from .extras import tuner_best  # noqa: E402

DPI = 100
# An ISA's colour and a kernel's marker follow its place in the run's lists (Bench.isas(),
# Bench.kernels(): the build's own order), so they hold across the figures of a report and the
# reports of one build, and a new ISA or kernel gets one of its own.
ISA_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
              "#17becf")
KERNEL_MARKERS = ("x", "s", "^", "o", "D", "*", "P", "v", "<", ">", "h", "p", "8")
HEATMAP_ROWS = 56  # shapes per speedup heatmap; more go into further numbered files
COMPARE_BARS = 80  # above this, the comparison plot shows the lowest and highest halves
SCALING_LEGEND = 20  # shapes named in the scaling plot's legend; more are drawn grey with their median


@dataclass
class Figure:
    file: str
    title: str
    caption: str


DTYPE_COLORS = {"bf16": "#1f77b4", "fp16": "#ff7f0e"}


def _pick(palette, order, name):
    return palette[(order.index(name) if name in order else sum(map(ord, name))) % len(palette)]


def isa_color(bench, isa):
    return _pick(ISA_COLORS, bench.isas(), isa)


def style(bench, kernel, isa, dtype="fp32"):
    color = isa_color(bench, isa)
    marker = _pick(KERNEL_MARKERS, bench.kernels(), kernel)
    # Baselines and peers dashed: the lines to beat, not attune's own kernels; 16-bit storage hollow.
    return dict(color=color, marker=marker, linestyle="--" if kernel in PEERS or kernel == "gemm" else "-",
                markersize=5, linewidth=1.4, fillstyle="full" if dtype == "fp32" else "none")


def _dtype_suffix(dtype):
    """File-name suffix of a 16-bit figure; fp32 figures keep the names they had before dt:."""
    return "" if dtype == "fp32" else "_" + dtype


def _save(fig, out_dir, name):
    fig.savefig(os.path.join(out_dir, name), dpi=DPI, bbox_inches="tight")
    plt.close(fig)


def _figure_legend(fig, axes):
    seen = {}
    for ax in np.ravel(axes):
        for h, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, h)
    if seen:
        fig.legend(list(seen.values()), list(seen.keys()), loc="center left", bbox_to_anchor=(1.0, 0.5),
                   fontsize=8, frameon=False)


def _integer_ticks(ax, values, axis="x"):
    which = ax.xaxis if axis == "x" else ax.yaxis
    which.set_major_locator(FixedLocator(sorted(values)))
    which.set_major_formatter(FuncFormatter(lambda v, _: "%d" % v))
    which.set_minor_locator(NullLocator())


def square_groups(bench):
    """Results with seq_q == seq_kv grouped by (dtype, batch, heads_q, heads_kv, threads): the sets a
    "versus sequence length" plot can draw. Groups with a single length are dropped when any
    group has several."""
    groups = {}
    for r in bench.results.values():
        s = r.shape
        if s.square:
            groups.setdefault((dtype_key(s.dtype), s.batch, s.heads_q, s.heads_kv, s.threads), []).append(r)
    several = {k: v for k, v in groups.items() if len({r.shape.seq_q for r in v}) > 1}
    return [((key[0][1],) + key[1:], rs) for key, rs in sorted((several or groups).items())]


def _group_names(key):
    dt, b, hq, hkv, t = key
    suffix = "b%d_hq%d_hkv%d_t%d%s" % (b, hq, hkv, t, _dtype_suffix(dt))
    heads = "%d heads" % hq if hq == hkv else "%d query / %d key-value heads" % (hq, hkv)
    return suffix, "%sbatch %d, %s, %d thread%s" % ("" if dt == "fp32" else dt + ", ", b, heads, t,
                                                   "" if t == 1 else "s")


def throughput(bench, out_dir):
    figs = []
    for key, rs in square_groups(bench):
        suffix, what = _group_names(key)
        dt, t = key[0], key[4]
        dks = sorted({r.shape.d_k for r in rs})
        causals = sorted({r.shape.causal for r in rs})
        seqs = sorted({r.shape.seq_q for r in rs})
        fig, axes = plt.subplots(len(causals), len(dks), figsize=(1.0 + 4.2 * len(dks), 0.6 + 3.3 * len(causals)),
                                 squeeze=False, sharex=True, sharey=True)
        peak = bench.default_peak(t)
        top = max([r.gflops for r in rs] + [peak or 0])
        for i, causal in enumerate(causals):
            for j, d in enumerate(dks):
                ax = axes[i][j]
                for v in sorted({(r.kernel, r.isa) for r in rs}, key=bench.variant_key):
                    pts = sorted((r.shape.seq_q, r.gflops) for r in rs
                                 if (r.kernel, r.isa) == v and r.shape.d_k == d and r.shape.causal == causal)
                    if pts:
                        ax.plot(*zip(*pts), label="%s/%s" % v, **style(bench, *v))
                if peak:
                    ax.axhline(peak, color="black", linestyle=":", linewidth=1.6,
                               label="measured peak, %s t%d: %.0f GFLOP/s" % (bench.default_isa, t, peak))
                if dt == "bf16" and bench.bf16_dots().get(t):
                    ax.axhline(bench.bf16_dots()[t], color=isa_color(bench, BF16_DOT_ISA), linestyle=":", linewidth=1.6,
                               label="bf16 dot-product peak t%d: %.0f GFLOP/s" % (t, bench.bf16_dots()[t]))
                ax.set_xscale("log", base=2)
                _integer_ticks(ax, seqs)
                ax.set_ylim(0, top * 1.08)
                ax.grid(True, alpha=0.3)
                ax.set_title("d_k %d, %s" % (d, "causal" if causal else "non-causal"), fontsize=10)
                if i == len(causals) - 1:
                    ax.set_xlabel("seq_q = seq_kv")
                if j == 0:
                    ax.set_ylabel("GFLOP/s")
        fig.suptitle("Throughput vs sequence length: %s" % what)
        _figure_legend(fig, axes)
        name = "throughput_%s.png" % suffix
        _save(fig, out_dir, name)
        figs.append(Figure(name, "Throughput vs sequence length (%s)" % what,
                           "One line per kernel/ISA (colour: ISA, marker: kernel; baselines dashed), one panel "
                           "per d_k, non-causal above causal. The dotted line is the FMA peak measured by the "
                           "bench's probe for the default ISA at this thread count (and, for bf16 on a CPU with "
                           "AVX512-BF16, the bf16 dot-product probe's)."))
    return figs


def peak_fraction(bench, out_dir):
    figs = []
    cmap = matplotlib.colormaps["viridis"].copy()
    cmap.set_bad("#e0e0e0")
    for key, rs in square_groups(bench):
        suffix, what = _group_names(key)
        own = [r for r in rs if r.kernel not in PEERS]
        dks = sorted({r.shape.d_k for r in own})
        seqs = sorted({r.shape.seq_q for r in own})
        causals = sorted({r.shape.causal for r in own})
        cells = {}
        for causal in causals:
            for i, d in enumerate(dks):
                for j, s in enumerate(seqs):
                    cand = [r for r in own if (r.shape.causal, r.shape.d_k, r.shape.seq_q) == (causal, d, s)]
                    if cand:
                        best = max(cand, key=lambda r: r.gflops)
                        frac = fraction_of_peak(bench, best)
                        if frac is not None:
                            cells[(causal, i, j)] = (frac, best)
        if not cells:
            continue  # no probes in the run: nothing to divide by
        vmax = max(1.0, max(f for f, _ in cells.values()))
        fig, axes = plt.subplots(1, len(causals), squeeze=False,
                                 figsize=(1.5 + 1.25 * len(seqs) * len(causals), 1.6 + 0.75 * len(dks)))
        for k, causal in enumerate(causals):
            ax = axes[0][k]
            grid = np.full((len(dks), len(seqs)), np.nan)
            for (c, i, j), (frac, best) in cells.items():
                if c == causal:
                    grid[i, j] = frac
                    ax.text(j, i, "%s\n%.0f%%" % (best.variant, frac * 100), ha="center", va="center", fontsize=7,
                            color="white" if frac < 0.55 * vmax else "black")
            im = ax.imshow(grid, cmap=cmap, vmin=0, vmax=vmax, origin="lower", aspect="auto")
            ax.set_xticks(range(len(seqs)), [str(s) for s in seqs])
            ax.set_yticks(range(len(dks)), [str(d) for d in dks])
            ax.set_xlabel("seq_q = seq_kv")
            if k == 0:
                ax.set_ylabel("d_k")
            ax.set_title("causal" if causal else "non-causal", fontsize=10)
        fig.colorbar(im, ax=axes.ravel().tolist(), label="fraction of measured peak", shrink=0.9)
        fig.suptitle("Best kernel per shape, fraction of peak: %s" % what, fontsize=11, y=1.04)
        name = "peak_fraction_%s.png" % suffix
        _save(fig, out_dir, name)
        figs.append(Figure(name, "Fraction of peak, best kernel per shape (%s)" % what,
                           "Each cell: the fastest attune kernel/ISA for that shape and its GFLOP/s as a fraction "
                           "of the measured peak of the instruction it runs at the same thread count."))
    return figs


def speedup(bench, out_dir, baseline):
    """One heatmap (or several numbered parts) per dtype: each kernel against the baseline in
    the same storage type."""
    ratios = speedups(bench, baseline)
    figs = []
    for dt in sorted({s.dtype for s, _ in ratios}, key=dtype_key):
        figs += _speedup_heatmaps({k: x for k, x in ratios.items() if k[0].dtype == dt}, out_dir, baseline, dt,
                                  bench.variant_key)
    return figs


def _speedup_heatmaps(ratios, out_dir, baseline, dt, variant_key):
    shapes = sorted({s for s, _ in ratios})
    variants = sorted({v for _, v in ratios}, key=variant_key)
    parts = [shapes[i:i + HEATMAP_ROWS] for i in range(0, len(shapes), HEATMAP_ROWS)]
    logs = [math.log2(x) for x in ratios.values()]
    lim = min(4.0, max(1.0, max(abs(x) for x in logs)))
    figs = []
    for p, part in enumerate(parts):
        grid = np.full((len(part), len(variants)), np.nan)
        fig, ax = plt.subplots(figsize=(3.0 + 0.8 * len(variants), 1.2 + 0.3 * len(part)))
        for i, s in enumerate(part):
            for j, v in enumerate(variants):
                x = ratios.get((s, v))
                if x is not None:
                    grid[i, j] = math.log2(x)
                    ax.text(j, i, "%.2f" % x, ha="center", va="center", fontsize=7,
                            color="white" if abs(math.log2(x)) > 0.6 * lim else "black")
        ax.set_facecolor("#e0e0e0")  # no measurement: grey, not the white of 1x
        im = ax.imshow(grid, cmap="RdBu", norm=TwoSlopeNorm(vcenter=0, vmin=-lim, vmax=lim), aspect="auto")
        ax.set_xticks(range(len(variants)), ["%s/%s" % v for v in variants], rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(part)), [s.label() for s in part], fontsize=8)
        ticks = [t for t in range(-int(lim), int(lim) + 1)]
        cb = fig.colorbar(im, ax=ax, ticks=ticks, shrink=0.8)
        cb.ax.set_yticklabels(["%gx" % 2.0 ** t for t in ticks])
        cb.set_label("GFLOP/s over %s (>1: faster)" % baseline)
        more = "" if len(parts) == 1 else " (part %d of %d)" % (p + 1, len(parts))
        typed = "" if dt == "fp32" else ", %s" % dt
        ax.set_title("Speedup over %s, same shape%s%s" % (baseline, typed, more), fontsize=11)
        name = "speedup_vs_%s%s%s.png" % (baseline, _dtype_suffix(dt), "" if len(parts) == 1 else "_%d" % (p + 1))
        _save(fig, out_dir, name)
        figs.append(Figure(name, "Speedup over %s%s%s" % (baseline, typed, more),
                           "Each kernel/ISA's GFLOP/s divided by the best %s result on the same shape and thread "
                           "count (blue: faster than %s, red: slower)." % (baseline, baseline)))
    return figs


def roofline(bench, out_dir):
    rs = [r for r in bench.results.values() if r.intensity]
    if not rs:
        return []
    threads = sorted({r.shape.threads for r in rs})
    fig, axes = plt.subplots(1, len(threads), figsize=(1.0 + 5.6 * len(threads), 4.8), squeeze=False, sharey=True)
    peaks = bench.peaks()
    for k, t in enumerate(threads):
        ax = axes[0][k]
        pts = [r for r in rs if r.shape.threads == t]
        peak, bw = bench.default_peak(t), bench.triad(t)
        lo, hi = min(r.intensity for r in pts) / 2, max(r.intensity for r in pts) * 2
        if peak and bw:
            lo, hi = min(lo, peak / bw / 2), max(hi, peak / bw * 2)
        xs = np.logspace(math.log10(lo), math.log10(hi), 256)
        if peak and bw:
            ax.plot(xs, np.minimum(peak, bw * xs), color="black", linewidth=2,
                    label="roof: %s peak / triad bandwidth" % bench.default_isa)
        elif peak:
            ax.axhline(peak, color="black", linewidth=2, label="roof: %s peak" % bench.default_isa)
        elif bw:
            ax.plot(xs, bw * xs, color="black", linewidth=2, label="roof: triad bandwidth")
        drawn = [peak] if peak else []
        for (isa, pt), value in sorted(peaks.items(), key=lambda kv: -kv[1]):
            if pt != t or any(abs(value / d - 1) < 0.03 for d in drawn):
                continue  # one line per distinct ceiling (avx2 and avx512 often coincide)
            drawn.append(value)
            ax.axhline(value, color=isa_color(bench, isa), linestyle=":", linewidth=1)
            ax.text(hi, value, " %s %.0f" % (isa, value), va="center", ha="left", fontsize=7,
                    color=isa_color(bench, isa))
        for v in sorted({(r.kernel, r.isa, r.shape.dtype) for r in pts},
                        key=lambda v: bench.variant_key(v[:2]) + dtype_key(v[2])):
            sel = [r for r in pts if (r.kernel, r.isa, r.shape.dtype) == v]
            st = style(bench, *v)
            ax.plot([r.intensity for r in sel], [r.gflops for r in sel], linestyle="none", marker=st["marker"],
                    color=st["color"], fillstyle=st["fillstyle"], markersize=5, alpha=0.85,
                    label="%s/%s" % v[:2] + ("" if v[2] == "fp32" else " " + v[2]))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo, hi)
        ax.grid(True, which="both", alpha=0.25)
        ax.set_xlabel("arithmetic intensity (FLOP per byte of Q, K, V, O)")
        if k == 0:
            ax.set_ylabel("GFLOP/s")
        probes = []
        if peak:
            probes.append("peak %.0f GFLOP/s" % peak)
        if bw:
            probes.append("triad %.1f GB/s" % bw)
        ax.set_title("%d thread%s%s" % (t, "" if t == 1 else "s", (": " + ", ".join(probes)) if probes else
                                        " (no probes in the run)"), fontsize=10)
    _figure_legend(fig, axes)
    fig.suptitle("Roofline: every benchmark against the measured compute and bandwidth roofs")
    _save(fig, out_dir, "roofline.png")
    return [Figure("roofline.png", "Roofline",
                   "Arithmetic intensity = FLOPS / bytes_per_second (compulsory traffic: Q, K, V read and O "
                   "written once, in their storage sizes: 16-bit runs, hollow markers, move half the bytes). "
                   "Roofs from the context probes: the default ISA's FMA peak and the stream-triad bandwidth at "
                   "the same thread count; dotted lines are the other ISAs' peaks.")]


def dtype_speedup(bench, out_dir):
    """Bars: each 16-bit benchmark's GFLOP/s over its fp32 twin (same kernel, ISA, shape, threads)."""
    pairs = dtype_speedups(bench)
    if not pairs:
        return []
    shown = pairs[:COMPARE_BARS]
    ratios = [x for _, _, x in shown]
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.22 * len(shown)))
    y = np.arange(len(shown))
    ax.barh(y, [x - 1 for x in ratios], left=1, height=0.7,
            color=[DTYPE_COLORS.get(r.shape.dtype, "#9e9e9e") for r, _, _ in shown])
    ax.axvline(1, color="black", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlim(min(ratios + [0.8]) / 1.1, max(ratios + [1.25]) * 1.1)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: "%.3g" % v))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: "%.3g" % v))
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_yticks(y, ["%s %s" % (r.variant, r.shape.label()) for r, _, _ in shown], fontsize=7)
    ax.set_ylim(len(shown) - 0.5, -0.5)
    for yi, x in zip(y, ratios):
        ax.text(x, yi, " %.2f " % x, va="center", ha="left" if x >= 1 else "right", fontsize=6)
    ax.set_xlabel("16-bit / fp32 GFLOP/s (>1: the 16-bit storage is faster)")
    more = "" if len(shown) == len(pairs) else " (first %d of %d)" % (len(shown), len(pairs))
    ax.set_title("16-bit storage vs fp32, same kernel, ISA, shape and threads%s" % more, fontsize=11)
    ax.grid(True, axis="x", which="both", alpha=0.25)
    _save(fig, out_dir, "dtype_speedup.png")
    return [Figure("dtype_speedup.png", "16-bit vs fp32",
                   "GFLOP/s of each bf16 (blue) or fp16 (orange) benchmark divided by the same kernel/ISA on the "
                   "same shape and thread count with fp32 storage.")]


def scaling(bench, out_dir):
    curves = {}
    for r in bench.results.values():
        curves.setdefault((r.kernel, r.isa, r.shape.without_threads()), {})[r.shape.threads] = r
    curves = {k: v for k, v in curves.items() if len(v) > 1}
    if not curves:
        return []
    variants = sorted({(k, i) for k, i, _ in curves}, key=bench.variant_key)
    shapes = sorted({s for _, _, s in curves})
    few = len(shapes) <= SCALING_LEGEND  # else grey lines and their median: a legend would not help
    colors = plt.get_cmap("tab20")
    ncols = min(4, len(variants))
    nrows = -(-len(variants) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.0 + 3.8 * ncols, 0.8 + 3.2 * nrows), squeeze=False,
                             sharey=True)
    for k, v in enumerate(variants):
        ax = axes[k // ncols][k % ncols]
        all_t, per_t = set(), {}
        for n, s in enumerate(shapes):
            pts = curves.get(v + (s,))
            if not pts:
                continue
            ts = sorted(pts)
            all_t.update(ts)
            ys = [pts[t].gflops / pts[ts[0]].gflops for t in ts]
            for t, y in zip(ts, ys):
                per_t.setdefault(t, []).append(y)
            if few:
                ax.plot(ts, ys, marker="o", markersize=4, linewidth=1.2, color=colors(n % 20),
                        label=next(iter(pts.values())).shape.label(threads=False))
            else:
                ax.plot(ts, ys, linewidth=0.6, color="#9e9e9e", alpha=0.4)
        if not few:
            ts = sorted(per_t)
            ax.plot(ts, [float(np.median(per_t[t])) for t in ts], color="#d62728", linewidth=2.2, marker="o",
                    markersize=4, label="median over shapes")
        t0, t1 = min(all_t), max(all_t)
        ax.plot([t0, t1], [1, t1 / t0], color="black", linestyle="--", linewidth=1.2, label="ideal")
        _integer_ticks(ax, all_t)
        ax.grid(True, alpha=0.3)
        ax.set_title("%s/%s" % v, fontsize=10)
        ax.set_xlabel("threads")
        if k % ncols == 0:
            ax.set_ylabel("speedup over %d thread%s" % (t0, "" if t0 == 1 else "s"))
    for k in range(len(variants), nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)
    _figure_legend(fig, axes)
    fig.suptitle("Thread scaling (%d shapes measured at several thread counts)" % len(shapes))
    _save(fig, out_dir, "scaling.png")
    return [Figure("scaling.png", "Thread scaling",
                   "GFLOP/s at each thread count divided by GFLOP/s at the lowest one, per shape; the dashed "
                   "line is ideal linear scaling. Only shapes measured at several thread counts appear.")]


def compare_bars(rows, out_dir):
    """rows: bench.compare() output (lowest ratio first)."""
    if not rows:
        return []
    shown = rows if len(rows) <= COMPARE_BARS else rows[:COMPARE_BARS // 2] + rows[-COMPARE_BARS // 2:]
    ratios = [t[3] for t in shown]
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.2 * len(shown)))
    colors = ["#d62728" if x < 0.95 else "#2ca02c" if x > 1.05 else "#9e9e9e" for x in ratios]
    y = np.arange(len(shown))
    ax.barh(y, [x - 1 for x in ratios], left=1, color=colors, height=0.7)
    ax.axvline(1, color="black", linewidth=1)
    ax.axvspan(0.95, 1.05, color="#9e9e9e", alpha=0.12)
    ax.set_xscale("log")
    lo, hi = min(ratios + [0.9]) / 1.08, max(ratios + [1.1]) * 1.08
    ax.set_xlim(lo, hi)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: "%.3g" % v))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: "%.3g" % v))
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_yticks(y, [label_of(t[0]) for t in shown], fontsize=7)
    ax.set_ylim(len(shown) - 0.5, -0.5)  # lowest ratio on top
    for yi, x in zip(y, ratios):
        ax.text(x, yi, " %.2f " % x, va="center", ha="left" if x >= 1 else "right", fontsize=6)
    ax.set_xlabel("after / before GFLOP/s (>1: faster)")
    note = "" if len(shown) == len(rows) else " (%d lowest and %d highest of %d)" % (
        COMPARE_BARS // 2, COMPARE_BARS // 2, len(rows))
    ax.set_title("Before vs after%s" % note, fontsize=11)
    ax.grid(True, axis="x", which="both", alpha=0.25)
    _save(fig, out_dir, "compare.png")
    return [Figure("compare.png", "Before vs after",
                   "Per-benchmark ratio of GFLOP/s, after over before; the grey band is +/-5%.")]


def tuner(measurements, out_dir, limit=12):
    best = tuner_best(measurements)
    shown = best[:limit]
    ncols = min(3, len(shown))
    nrows = -(-len(shown) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(0.6 + 4.4 * ncols, 0.8 + 3.6 * nrows), squeeze=False)
    for k, (shape, top, _, _) in enumerate(shown):
        ax = axes[k // ncols][k % ncols]
        ms = [m for m in measurements if m.shape == shape]
        bqs = sorted({m.block_q for m in ms})
        bkvs = sorted({m.block_kv for m in ms})
        grid = np.full((len(bqs), len(bkvs)), np.nan)
        for m in ms:
            i, j = bqs.index(m.block_q), bkvs.index(m.block_kv)
            grid[i, j] = m.gflops if np.isnan(grid[i, j]) else max(grid[i, j], m.gflops)
        ax.imshow(grid, cmap="viridis", origin="lower", aspect="auto")
        lo, hi = np.nanmin(grid), np.nanmax(grid)
        for i in range(len(bqs)):
            for j in range(len(bkvs)):
                if not np.isnan(grid[i, j]):
                    bright = hi > lo and (grid[i, j] - lo) / (hi - lo) > 0.6
                    ax.text(j, i, "%.0f" % grid[i, j], ha="center", va="center", fontsize=7,
                            color="black" if bright else "white")
        bi, bj = bqs.index(top.block_q), bkvs.index(top.block_kv)
        ax.add_patch(Rectangle((bj - 0.5, bi - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
        ax.set_xticks(range(len(bkvs)), [str(b) for b in bkvs])
        ax.set_yticks(range(len(bqs)), [str(b) for b in bqs])
        ax.set_xlabel("block_kv")
        ax.set_ylabel("block_q")
        ax.set_title("%s\nbest %s: %.1f GFLOP/s" % (shape.label(), top.config(), top.gflops), fontsize=9)
    for k in range(len(shown), nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)
    more = "" if len(best) == len(shown) else " (first %d of %d shapes)" % (len(shown), len(best))
    fig.suptitle("Tuner: best GFLOP/s per tile size%s" % more)
    fig.tight_layout()
    _save(fig, out_dir, "tuner.png")
    return [Figure("tuner.png", "Tuner measurements",
                   "Per shape, the best GFLOP/s measured for each (block_q, block_kv) over kernels, ISAs and "
                   "thread counts; the red box is the best configuration%s." % more)]


def history(runs, out_dir):
    names = sorted({n for run in runs for n in run.results})
    x = np.arange(len(runs))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.5 + 0.6 * len(runs)), 4.4))
    logs = np.full((len(names), len(runs)), np.nan)
    for i, n in enumerate(names):
        vals = np.array([run.results.get(n, np.nan) for run in runs])
        rel = vals / np.nanmedian(vals)
        logs[i] = np.log(rel)
        few = len(names) <= 8
        ax.plot(x, rel, marker="o" if few else None, markersize=3, linewidth=1.2 if few else 0.6,
                color=None if few else "#9e9e9e", alpha=1.0 if few else 0.5, label=label_of(n) if few else None)
    counts = np.sum(~np.isnan(logs), axis=0)
    gm = np.exp(np.nansum(logs, axis=0) / np.maximum(counts, 1))
    ax.plot(x, gm, color="black", linewidth=2.4, marker="o", markersize=4,
            label="geometric mean of %d benchmarks" % len(names))
    ax.axhline(1, color="black", linewidth=0.8, linestyle=":")
    ax.set_xticks(x, [run.label() for run in runs], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("GFLOP/s / the benchmark's median")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    ax.set_title("History: %d runs" % len(runs), fontsize=11)
    _save(fig, out_dir, "history.png")
    return [Figure("history.png", "History",
                   "Each benchmark's GFLOP/s in each recorded run relative to its own median over the "
                   "history (1 = typical); the bold line is the geometric mean over benchmarks.")]
