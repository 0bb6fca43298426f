"""report.html (one self-contained file: CSS inline, PNGs as base64 data URIs, no network) and
summary.md (the same tables in markdown, for CI logs)."""
import base64
import html
import os
from dataclasses import replace

from .bench import (BASELINE, BF16_DOT_ISA, best_per_shape, dtype_speedups, fraction_of_peak, geomean, has_kernel,
                    label_of)
from . import targets

PROVENANCE = ("cpu_model", "cores", "isa_runnable", "isa_default", "attune_version", "attune_git_revision",
              "attune_compiler", "attune_flags", "attune_build_type", "preset", "date", "host_name", "peer",
              "torch_version")
CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1180px;
       padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
.gen { color: #666; font-size: 12px; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.slower td { background: #fde8e8; } tr.faster td { background: #e6f4e6; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 12px; margin-top: 0.3em; } code { font-size: 12px; }
nav a { margin-right: 1em; }
"""


def _e(x):
    return html.escape(str(x))


def fmt_gflops(x):
    return "%.1f" % x


def fmt_pct(frac):
    return "" if frac is None else "%.0f%%" % (frac * 100)


def fmt_ratio(x):
    return "" if x is None else "%.2fx" % x


def summary_rows(bench, dtype=None):
    """(headers, rows of strings): the best attune kernel per shape (of one dtype if given) and its
    speedups over the baseline and the peer in the same dtype."""
    with_gemm, with_torch = has_kernel(bench, BASELINE), has_kernel(bench, "pytorch")
    headers = ["shape", "best kernel/isa", "GFLOP/s", "% of peak"]
    headers += ["vs %s" % BASELINE] if with_gemm else []
    headers += ["vs pytorch"] if with_torch else []
    rows = []
    for shape, best, by_kernel in best_per_shape(bench, dtype):
        if best is None:
            continue
        row = [shape.label(), best.variant, fmt_gflops(best.gflops), fmt_pct(fraction_of_peak(bench, best))]
        for flag, kernel in ((with_gemm, BASELINE), (with_torch, "pytorch")):
            if flag:
                row.append(fmt_ratio(best.gflops / by_kernel[kernel].gflops) if kernel in by_kernel else "")
        rows.append(row)
    return headers, rows


def summary_sections(bench):
    """[(dtype or None, (headers, rows))]: one table for a run of one dtype, else one per dtype."""
    dtypes = bench.dtypes()
    if len(dtypes) <= 1:
        return [(None, summary_rows(bench))]
    return [(dt, summary_rows(bench, dt)) for dt in dtypes]


def dtype_rows(bench):
    """(headers, rows) of the 16-bit vs fp32 table, or None when the run has no such pair."""
    pairs = dtype_speedups(bench)
    if not pairs:
        return None
    headers = ["kernel/isa", "shape", "dtype", "GFLOP/s", "fp32 GFLOP/s", "dtype / fp32", "% of peak",
               "fp32 % of peak", "probe", "GB/s", "fp32 GB/s"]
    rows = []
    for r, f, ratio in pairs:
        probe, _ = bench.probe_for(r)
        rows.append([r.variant, r.shape.as_fp32().label(), r.shape.dtype, fmt_gflops(r.gflops), fmt_gflops(f.gflops),
                     fmt_ratio(ratio), fmt_pct(fraction_of_peak(bench, r)), fmt_pct(fraction_of_peak(bench, f)),
                     probe or "", "%.1f" % r.gbps if r.gbps else "", "%.1f" % f.gbps if f.gbps else ""])
    return headers, rows


def kv_rows(bench):
    """(headers, rows) of the K/V cache types table (benchmarks with a kv: segment: bf16 or quantized
    K/V under fp32 Q/O), or None: bytes/s (codes and scales) against the triad probe at the same
    thread count, and the speedup over the bf16-K/V twin (same kernel, ISA, shape, threads)."""
    rows = [r for r in bench.results.values() if r.shape.kv]
    if not rows:
        return None
    triads = bench.triads()
    twins = {(r.kernel, r.isa, replace(r.shape, kv="")): r for r in rows if r.shape.kv == "bf16"}
    headers = ["kernel/isa", "shape", "kv", "GB/s", "triad GB/s", "% of triad", "vs bf16 K/V"]
    out = []
    for r in sorted(rows, key=lambda r: (replace(r.shape, kv="").label(), r.variant, r.shape.kv)):
        twin = twins.get((r.kernel, r.isa, replace(r.shape, kv="")))
        triad = triads.get(r.shape.threads)
        out.append([r.variant, replace(r.shape, kv="").label(), r.shape.kv, "%.1f" % r.gbps if r.gbps else "", "%.1f" % triad if triad else "",
                    fmt_pct(r.gbps / triad) if r.gbps and triad else "",
                    fmt_ratio(r.gflops / twin.gflops) if twin is not None and twin is not r else ""])
    return headers, out


def dtype_summary(bench):
    """One line per 16-bit type: geometric-mean ratio over fp32, prefill and decode apart."""
    lines = []
    pairs = dtype_speedups(bench)
    for dt in sorted({r.shape.dtype for r, _, _ in pairs}):
        parts = []
        for what, pick in (("prefill", lambda s: s.seq_q > 1), ("decode (seq_q 1)", lambda s: s.seq_q == 1)):
            xs = [x for r, _, x in pairs if r.shape.dtype == dt and pick(r.shape)]
            if xs:
                parts.append("%s %.2fx over %d benchmarks (%.2f-%.2f)" % (what, geomean(xs), len(xs), min(xs), max(xs)))
        lines.append("%s vs fp32, same kernel/ISA/shape/threads, geometric mean: %s" % (dt, "; ".join(parts)))
    return lines


def compare_rows(rows):
    headers = ["benchmark", "before GFLOP/s", "after GFLOP/s", "after / before"]
    return headers, [[label_of(n), fmt_gflops(b.gflops), fmt_gflops(a.gflops), "%.3f" % x] for n, b, a, x in rows]


def compare_summary(rows, only_before, only_after):
    gm = geomean(x for *_, x in rows)
    parts = ["%d benchmarks in both runs" % len(rows)]
    if gm:
        parts.append("geometric mean after/before %.3f" % gm)
        parts.append("%d slower than 0.95, %d faster than 1.05" % (sum(x < 0.95 for *_, x in rows),
                                                                  sum(x > 1.05 for *_, x in rows)))
    if only_before:
        parts.append("%d only before" % len(only_before))
    if only_after:
        parts.append("%d only after" % len(only_after))
    return "; ".join(parts)


def notes(bench):
    out = []
    if not has_kernel(bench, BASELINE):
        out.append("No `%s` kernel in this run: speedups over the %s baseline are not shown." % (BASELINE, BASELINE))
    if not bench.peaks():
        out.append("The run has no probe results (attune_bench --no-probes?): no peak ceilings or fractions of peak.")
    for name, why in bench.failed:
        out.append("Skipped by the bench: `%s` (%s)." % (name, why))
    if bench.ignored:
        out.append("Ignored %d benchmarks that are not attention benchmarks (first: `%s`)."
                   % (len(bench.ignored), bench.ignored[0]))
    models = {ctx.get("cpu_model") for _, ctx in bench.contexts if ctx.get("cpu_model")}
    if len(models) > 1:
        out.append("The inputs come from different CPUs (%s); peaks are the first file's." % ", ".join(sorted(models)))
    return out


# --------------------------------------------------------------------------------------------
# HTML


def _table(headers, rows, numeric_from=1, row_classes=None):
    out = ["<table><thead><tr>", "".join("<th>%s</th>" % _e(h) for h in headers), "</tr></thead><tbody>"]
    for k, row in enumerate(rows):
        cls = row_classes[k] if row_classes else ""
        out.append('<tr%s>' % (' class="%s"' % cls if cls else ""))
        out.append("".join('<td%s>%s</td>' % (' class="num"' if i >= numeric_from else "", _e(c))
                           for i, c in enumerate(row)))
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _md_inline(text):
    """Notes are written with `code` spans for markdown; the HTML gets <code> for them."""
    parts = text.split("`")
    return "".join(("<code>%s</code>" if i % 2 else "%s") % _e(p) for i, p in enumerate(parts))


def _figure(out_dir, fig):
    with open(os.path.join(out_dir, fig.file), "rb") as f:
        data = base64.b64encode(f.read()).decode("ascii")
    return ('<figure id="%s"><img alt="%s" src="data:image/png;base64,%s">'
            '<figcaption><b>%s</b> (%s). %s</figcaption></figure>'
            % (_e(fig.file), _e(fig.title), data, _e(fig.title), _e(fig.file), _e(fig.caption)))


def provenance_table(contexts, labels=None):
    keys = [k for k in PROVENANCE if any(k in ctx for _, ctx in contexts)]
    headers = [""] + [(label + ": " if label else "") + os.path.basename(p)
                      for (p, _), label in zip(contexts, labels or [""] * len(contexts))]
    rows = [[k] + [str(ctx.get(k, "")) for _, ctx in contexts] for k in keys]
    return headers, rows


def probes_table(bench):
    peaks, triads = bench.peaks(), bench.triads()
    threads = sorted({t for _, t in peaks} | set(triads) | set(bench.bf16_dots()) | set(bench.read16s()))
    if not threads:
        return None
    headers = ["probe"] + ["%d thread%s" % (t, "" if t == 1 else "s") for t in threads]
    rows = []
    for isa in sorted({i for i, _ in peaks}, key=bench.isa_key):
        rows.append(["FMA peak %s (GFLOP/s)" % isa] + ["%.1f" % peaks[(isa, t)] if (isa, t) in peaks else ""
                                                        for t in threads])
    for what, values in (("bf16 dot product, vdpbf16ps (GFLOP/s)", bench.bf16_dots()),
                         ("stream triad (GB/s)", triads), ("16-bit read (GB/s)", bench.read16s())):
        if values:
            rows.append([what] + ["%.1f" % values[t] if t in values else "" for t in threads])
    return headers, rows


def write_html(path, out_dir, *, command, inputs, generated, bench, figures, comparison=None, tuner=None,
               history=None):
    """figures: {section: [plots.Figure]}; comparison: (rows, only_before, only_after, before, after)."""
    cpu = bench.context.get("cpu_model", "unknown CPU")
    body = ["<h1>attune benchmark report</h1>",
            '<p class="gen">Generated by <code>%s</code> from %s on %s. Do not edit: rerun the command.</p>'
            % (_e(command), ", ".join("<code>%s</code>" % _e(p) for p in inputs), _e(generated))]
    target_results = targets.evaluate(bench)
    has_targets = any(rows for _, rows in target_results)
    dtype_table = dtype_rows(bench)
    sections = [("provenance", "Provenance"), ("summary", "Best kernel per shape")]
    sections += [("dtypes", "16-bit vs fp32")] if dtype_table else []
    kv_table = kv_rows(bench)
    sections += [("kvtypes", "K/V cache types")] if kv_table else []
    sections += [("targets", "Speed targets")] if has_targets else []
    sections += [("plots", "Plots")]
    sections += [("compare", "Before vs after")] if comparison else []
    sections += [("tuner", "Tuner")] if tuner else []
    sections += [("history", "History")] if history else []
    body.append("<nav>%s</nav>" % "".join('<a href="#%s">%s</a>' % (i, _e(t)) for i, t in sections))

    body.append('<h2 id="provenance">Provenance</h2>')
    body.append(_table(*provenance_table(bench.contexts), numeric_from=99))
    probes = probes_table(bench)
    if probes:
        body.append("<h3>Probes (measured in the bench process)</h3>")
        body.append(_table(*probes))

    body.append('<h2 id="summary">Best kernel per shape</h2>')
    body.append("<p>The fastest attune kernel/ISA on each shape (peers such as PyTorch excluded), its median "
                "GFLOP/s over repetitions and its fraction of the measured peak of the instruction it runs at the "
                "same thread count (the fp32 FMA of its ISA; the bf16 dot product for bf16 on %s)%s.</p>" % (
                    BF16_DOT_ISA,
                    "; speedups are GFLOP/s ratios against the best ISA of the baseline on the same shape and dtype"
                    if has_kernel(bench, BASELINE) or has_kernel(bench, "pytorch") else ""))
    for dt, table in summary_sections(bench):
        if dt:
            body.append("<h3>%s</h3>" % _e(dt))
        body.append(_table(*table, numeric_from=2))
    ns = notes(bench)
    if ns:
        body.append("<h3>Notes</h3><ul>%s</ul>" % "".join("<li>%s</li>" % _md_inline(n) for n in ns))

    if dtype_table:
        body.append('<h2 id="dtypes">16-bit vs fp32</h2>')
        body.append("<p>Each 16-bit benchmark (Q, K, V and O stored as bf16 or fp16) against the same kernel, ISA, "
                    "shape and thread count in fp32: GFLOP/s ratio (&gt;1: the 16-bit storage is faster), each "
                    "side's fraction of the probe of the instruction it runs, and the compulsory traffic in "
                    "storage sizes.</p>")
        body.append("<ul>%s</ul>" % "".join("<li>%s</li>" % _e(x) for x in dtype_summary(bench)))
        body.append(_table(*dtype_table, numeric_from=3))
        for fig in figures.get("dtypes", []):
            body.append(_figure(out_dir, fig))

    if kv_table:
        body.append('<h2 id="kvtypes">K/V cache types</h2>')
        body.append("<p>Benchmarks with K/V stored as bf16 or quantized under fp32 Q/O (the <code>kv:</code> name "
                    "segment): bytes/s of the codes and every scale read, against the stream triad probe at the "
                    "same thread count, and the speedup over the bf16-K/V benchmark of the same kernel, ISA, shape "
                    "and threads.</p>")
        body.append(_table(*kv_table, numeric_from=3))

    if has_targets:
        body.append('<h2 id="targets">Speed targets</h2>')
        body.append("<p>The kernel issue's targets as ratios to this run's own probes and benchmarks (flash on "
                    "the default ISA; medians over repetitions; spread = the largest coefficient of variation "
                    "among the benchmarks behind a ratio).</p>")
        body.append("<ul>%s</ul>" % "".join("<li>%s</li>" % _e(x) for x in targets.summary_lines(target_results)))
        headers, rows = targets_table(target_results)
        body.append(_table(headers, rows, numeric_from=2,
                           row_classes=["" if r[4] == "yes" else "slower" for r in rows]))

    body.append('<h2 id="plots">Plots</h2>')
    for fig in figures.get("plots", []):
        body.append(_figure(out_dir, fig))

    if comparison:
        rows, only_before, only_after, before, after = comparison
        body.append('<h2 id="compare">Before vs after</h2>')
        body.append("<p>%s.</p>" % _e(compare_summary(rows, only_before, only_after)))
        body.append(_table(*provenance_table(before.contexts + after.contexts, ["before", "after"]),
                           numeric_from=99))
        for fig in figures.get("compare", []):
            body.append(_figure(out_dir, fig))
        classes = ["slower" if x < 0.95 else "faster" if x > 1.05 else "" for *_, x in rows]
        body.append(_table(*compare_rows(rows), row_classes=classes))
        for what, names in (("Only before", only_before), ("Only after", only_after)):
            if names:
                body.append("<p>%s: %s</p>" % (what, ", ".join("<code>%s</code>" % _e(n) for n in names)))

    if tuner:
        ctx, best = tuner
        body.append('<h2 id="tuner">Tuner</h2>')
        if ctx:
            body.append(_table(["", "tuner"], [[k, str(ctx[k])] for k in PROVENANCE if k in ctx], numeric_from=99))
        body.append(_table(["shape", "best config", "GFLOP/s", "worst GFLOP/s", "best / worst", "configs"],
                           [[s.label(), m.config(), fmt_gflops(m.gflops), fmt_gflops(worst),
                             "%.2f" % (m.gflops / worst), str(n)] for s, m, worst, n in best], numeric_from=2))
        for fig in figures.get("tuner", []):
            body.append(_figure(out_dir, fig))

    if history:
        body.append('<h2 id="history">History</h2>')
        body.append(_table(["run", "date", "git revision", "benchmarks"],
                           [[str(i + 1), r.date, r.revision, str(len(r.results))] for i, r in enumerate(history)],
                           numeric_from=3))
        for fig in figures.get("history", []):
            body.append(_figure(out_dir, fig))

    page = ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="generator" content="attune_report"><title>attune report: %s</title>'
            "<style>%s</style></head><body>\n%s\n</body></html>\n" % (_e(cpu), CSS, "\n".join(body)))
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)


def write_weights_html(path, out_dir, *, command, source, generated, info_rows, figures):
    body = ["<h1>attention weights</h1>",
            '<p class="gen">Generated by <code>%s</code> from <code>%s</code> on %s. Do not edit: rerun the '
            "command.</p>" % (_e(command), _e(source), _e(generated)),
            _table(["", ""], info_rows, numeric_from=99)]
    body += [_figure(out_dir, fig) for fig in figures]
    page = ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="generator" content="attune_report"><title>attention weights: %s</title>'
            "<style>%s</style></head><body>\n%s\n</body></html>\n" % (_e(os.path.basename(source)), CSS,
                                                                      "\n".join(body)))
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)


# --------------------------------------------------------------------------------------------
# Markdown


def targets_table(results):
    rows = []
    for text, trs in results:
        for r in trs:
            rows.append([text, r.shape, "%.2f %s" % (r.value, r.unit), "%.2f" % r.goal, "yes" if r.ok else "no",
                         "%.1f%%" % (100 * r.spread) if r.spread is not None else "", r.detail])
    return ["target", "shape", "measured", "goal", "met", "spread", "numbers"], rows


def _md_table(headers, rows):
    esc = lambda c: str(c).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(map(esc, headers)) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return "\n".join(lines)


def write_markdown(path, *, command, inputs, generated, bench, comparison=None, tuner=None):
    ctx = bench.context
    lines = ["# attune benchmark report", "",
             "Generated by `%s` from %s on %s; do not edit." % (command, ", ".join("`%s`" % p for p in inputs),
                                                              generated), ""]
    facts = [("CPU", ctx.get("cpu_model")), ("cores", ctx.get("cores")), ("default ISA", ctx.get("isa_default")),
             ("attune", " ".join(x for x in (ctx.get("attune_version"), ctx.get("attune_git_revision")) if x)),
             ("compiler", " ".join(x for x in (ctx.get("attune_compiler"), (ctx.get("attune_flags") or "").strip())
                                   if x)),
             ("preset", ctx.get("preset")), ("date", ctx.get("date"))]
    lines += ["; ".join("%s: %s" % (k, v) for k, v in facts if v), ""]
    lines += ["## Best kernel per shape", ""]
    for dt, table in summary_sections(bench):
        lines += (["### %s" % dt, ""] if dt else []) + [_md_table(*table), ""]
    dtype_table = dtype_rows(bench)
    if dtype_table:
        lines += ["## 16-bit vs fp32", ""] + ["- " + x for x in dtype_summary(bench)] + ["", _md_table(*dtype_table), ""]
    kv_table = kv_rows(bench)
    if kv_table:
        lines += ["## K/V cache types", "", "Decoding and prefill with K/V stored as bf16 or quantized (fp32 Q/O): "
                  "bytes/s of the codes and every scale against the stream triad probe.", "",
                  _md_table(*kv_table), ""]
    if comparison:
        rows, only_before, only_after, _, _ = comparison
        lines += ["## Before vs after", "", compare_summary(rows, only_before, only_after) + ".", "",
                  _md_table(*compare_rows(rows)), ""]
    if tuner:
        _, best = tuner
        lines += ["## Tuner", "", _md_table(["shape", "best config", "GFLOP/s"],
                                            [[s.label(), m.config(), fmt_gflops(m.gflops)] for s, m, _, _ in best]),
                  ""]
    target_results = targets.evaluate(bench)
    if any(rows for _, rows in target_results):
        lines += ["## Speed targets", ""] + ["- " + x for x in targets.summary_lines(target_results)] + [""]
        lines += [_md_table(*targets_table(target_results)), ""]
    ns = notes(bench)
    if ns:
        lines += ["## Notes", ""] + ["- " + n for n in ns] + [""]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
