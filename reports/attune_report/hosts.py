"""Several machines side by side: `scripts/report.sh results/hostA results/hostB ... --out DIR`.

Each argument is a bench result folder (scripts/bench.sh's results/<host>-<date>/, holding
bench.json) or a bench JSON file. Per shape measured on every machine: the best attune kernel's
GFLOP/s and its fraction of that machine's own measured peak (the probe of the instruction it
runs, same threads), and which kernel and ISA won there; plots show the machines together.
"""
import os

from .bench import ReportError, best_per_shape, fraction_of_peak, load_bench


def _bench_files(path):
    if os.path.isdir(path):
        files = [os.path.join(path, "bench.json")]
        if not os.path.isfile(files[0]):
            raise ReportError("%s holds no bench.json (not a scripts/bench.sh result folder)" % path)
        return files
    return [path]


def machine_label(bench, path):
    """'<cpu_model> (<host>)': the CPU names every figure."""
    ctx = bench.context
    cpu = ctx.get("cpu_model") or "unknown CPU"
    host = ctx.get("host_name") or os.path.basename(os.path.normpath(path))
    return "%s (%s)" % (cpu, host)


def load_hosts(paths):
    """[(label, path, Bench)] in argument order; labels made unique with #2, #3 ..."""
    if len(paths) < 2:
        raise ReportError("a comparison of machines needs at least two result folders")
    hosts, seen = [], {}
    for path in paths:
        bench = load_bench(_bench_files(path))
        label = machine_label(bench, path)
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            label = "%s #%d" % (label, seen[label])
        hosts.append((label, path, bench))
    return hosts


def host_rows(hosts):
    """[(shape, [(label, best Result or None, fraction of own peak or None), ...])] for every shape
    at least two machines measured, in shape order (the first machine's order, then others')."""
    best = []
    for label, _, bench in hosts:
        best.append({shape: (r, fraction_of_peak(bench, r) if r else None)
                     for shape, r, _ in best_per_shape(bench)})
    shapes = []
    for per in best:
        for shape in per:
            if shape not in shapes:
                shapes.append(shape)
    rows = []
    for shape in shapes:
        cells = []
        for (label, _, _), per in zip(hosts, best):
            r, frac = per.get(shape, (None, None))
            cells.append((label, r, frac))
        if sum(1 for _, r, _ in cells if r is not None) >= 2:
            rows.append((shape, cells))
    if not rows:
        raise ReportError("the machines have no benchmark shape in common")
    return rows


def _cell(r, frac):
    if r is None:
        return "-"
    pct = " (%.0f%%)" % (100 * frac) if frac is not None else ""
    return "%.1f%s %s/%s" % (r.gflops, pct, r.kernel, r.isa)


def markdown(hosts, rows, command, generated):
    lines = ["# attune: machines side by side", "",
             "Generated %s by `%s`." % (generated, command), "", "| machine | source | ISA default | peak 1 thread (GFLOP/s) | compiler | attune |",
             "| --- | --- | --- | --- | --- | --- |"]
    for label, path, bench in hosts:
        ctx = bench.context
        peak = bench.default_peak(1)
        lines.append("| %s | %s | %s | %s | %s | %s %s |" % (
            label, path, ctx.get("isa_default", "?"), "%.1f" % peak if peak else "-", ctx.get("attune_compiler", "?"),
            ctx.get("attune_version", "?"), ctx.get("attune_git_revision", "?")))
    lines += ["", "Per shape: the best attune kernel's GFLOP/s, (its % of that machine's own peak), kernel/ISA.", "",
              "| shape | " + " | ".join(label for label, _, _ in hosts) + " |",
              "| --- |" + " --- |" * len(hosts)]
    for shape, cells in rows:
        lines.append("| %s | %s |" % (shape.label(), " | ".join(_cell(r, f) for _, r, f in cells)))
    return "\n".join(lines) + "\n"


def plot(hosts, rows, out_dir):
    """Two PNGs, machines as bar groups per shape: GFLOP/s and % of each machine's own peak."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    for what, value, fname, ylabel in (
            ("GFLOP/s", lambda r, f: r.gflops if r else 0.0, "hosts_gflops.png", "GFLOP/s (best attune kernel)"),
            ("% of own peak", lambda r, f: 100 * f if f is not None else 0.0, "hosts_peak.png",
             "% of the machine's own peak")):
        fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(rows) * len(hosts) / 2 + 2), 4.5))
        width = 0.8 / len(hosts)
        for i, (label, _, _) in enumerate(hosts):
            xs = [j + (i - (len(hosts) - 1) / 2) * width for j in range(len(rows))]
            ys = [value(cells[i][1], cells[i][2]) for _, cells in rows]
            ax.bar(xs, ys, width=width, label=label)
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels([shape.label() for shape, _ in rows], rotation=45, ha="right", fontsize=8)
        ax.set_ylabel(ylabel)
        ax.set_title("attune, machines side by side: %s" % what)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, fname), dpi=110)
        plt.close(fig)
        names.append(fname)
    return names


def html(md_text, pngs):
    import html as _html

    body = "<pre>%s</pre>\n" % _html.escape(md_text)
    body += "".join('<p><img src="%s" alt="%s"></p>\n' % (p, p) for p in pngs)
    return "<!doctype html><html><head><meta charset=\"utf-8\"><title>attune: machines</title></head><body>\n" + \
        body + "</body></html>\n"
