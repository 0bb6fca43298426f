"""`python3 -m attune_report`: argument parsing, exit codes and the staged output directory."""
import argparse
import contextlib
import datetime
import os
import shlex
import shutil
import sys
import tempfile

from . import render
from .bench import BASELINE, ReportError, compare, load_bench
from .extras import load_history, load_tuner, tuner_best

PROG = "python3 -m attune_report"


class UsageError(Exception):
    """Bad command line (exit status 2)."""


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one "error: ..." line and exit 2, not argparse's usage dump
        raise UsageError(message)


def index_list(text):
    """'0,2,5' -> [0, 2, 5] (argparse type: a malformed list is a usage error)."""
    try:
        out = [int(x) for x in text.split(",")]
    except ValueError:
        out = []
    if not out or min(out) < 0:
        raise argparse.ArgumentTypeError("%r is not a comma-separated list of indices" % text)
    return out


def _error(message):
    print("error: " + " ".join(str(message).split()), file=sys.stderr)


def _now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@contextlib.contextmanager
def staged(out, final):
    """Yields a scratch directory inside `out`; on success moves its files into `out` with
    `final` last, each by rename. A failed run leaves `out` as it was (an earlier report.html
    stays whole, a new one never appears half-written)."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise ReportError("output %s exists and is not a directory" % out)
    try:
        os.makedirs(out, exist_ok=True)
        stage = tempfile.mkdtemp(prefix=".attune_report-", dir=out)
    except OSError as e:
        raise ReportError("cannot create output directory %s: %s" % (out, e.strerror or e))
    try:
        yield stage
        try:
            for name in sorted(os.listdir(stage), key=lambda n: (n == final, n)):
                os.replace(os.path.join(stage, name), os.path.join(out, name))
        except OSError as e:
            raise ReportError("cannot write into %s: %s" % (out, e.strerror or e))
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def report_main(argv, command):
    p = Parser(prog=PROG, description="Plots and an HTML report from attune bench JSON.",
               epilog="Also: %s weights W.npy [--labels LABELS.txt] --out DIR (attention-weight heatmaps). "
                      "Input formats and outputs: pydoc attune_report." % PROG)
    p.add_argument("bench", nargs="*", metavar="BENCH.json",
                   help="attune_bench output (several files are merged, e.g. bench.json pytorch.json)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (created if missing)")
    p.add_argument("--compare", nargs=2, metavar=("BEFORE.json", "AFTER.json"),
                   help="add a per-benchmark comparison of two runs (without BENCH.json, AFTER is reported)")
    p.add_argument("--tuner", metavar="TUNE.json", help="tuner measurements to plot")
    p.add_argument("--history", metavar="HISTORY.jsonl", help="bench history, one JSON object per line")
    args = p.parse_intermixed_args(argv)
    if not args.bench and not args.compare:
        raise UsageError("no BENCH.json given (and no --compare BEFORE.json AFTER.json)")
    inputs = args.bench or [args.compare[1]]

    # Every input is read and checked before anything is drawn or written.
    bench = load_bench(inputs)
    comparison = None
    if args.compare:
        before, after = load_bench([args.compare[0]]), load_bench([args.compare[1]])
        rows, only_before, only_after = compare(before, after)
        if not rows:
            raise ReportError("%s and %s have no benchmark in common" % tuple(args.compare))
        comparison = (rows, only_before, only_after, before, after)
    tuner = load_tuner(args.tuner) if args.tuner else None
    history = load_history(args.history) if args.history else None

    from . import plots  # matplotlib is slow to import: only once the data is known to be good

    generated = _now()
    sources = inputs + ([x for x in args.compare if x not in inputs] if args.compare else []) + \
        [x for x in (args.tuner, args.history) if x]
    with staged(args.out, "report.html") as stage:
        figures = {"plots": plots.throughput(bench, stage) + plots.peak_fraction(bench, stage) +
                   plots.speedup(bench, stage, BASELINE) + plots.speedup(bench, stage, "pytorch") +
                   plots.roofline(bench, stage) + plots.scaling(bench, stage)}
        figures["dtypes"] = plots.dtype_speedup(bench, stage)
        if comparison:
            figures["compare"] = plots.compare_bars(comparison[0], stage)
        if tuner:
            figures["tuner"] = plots.tuner(tuner[1], stage)
            tuner = (tuner[0], tuner_best(tuner[1]))
        if history:
            figures["history"] = plots.history(history, stage)
        render.write_markdown(os.path.join(stage, "summary.md"), command=command, inputs=sources,
                              generated=generated, bench=bench, comparison=comparison, tuner=tuner)
        render.write_html(os.path.join(stage, "report.html"), stage, command=command, inputs=sources,
                          generated=generated, bench=bench, figures=figures, comparison=comparison, tuner=tuner,
                          history=history)
    print(os.path.join(args.out, "report.html"))
    return 0


def weights_main(argv, command):
    from . import weights

    p = Parser(prog=PROG + " weights",
               description="Per-head heatmaps of attention weights [batch, heads, seq_q, seq_kv] from a float .npy.")
    p.add_argument("npy", metavar="W.npy")
    p.add_argument("--labels", metavar="LABELS.txt",
                   help="one token per line: seq_kv lines, or seq_q + seq_kv (queries first)")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--batch", metavar="LIST", type=index_list,
                   help="batch elements to draw, e.g. 0,3 (default: the first %d)" % weights.MAX_BATCHES)
    p.add_argument("--heads", metavar="LIST", type=index_list, help="heads to draw, e.g. 0,1,7 (default: all)")
    args = p.parse_args(argv)

    w = weights.load_weights(args.npy)
    batch, heads, seq_q, seq_kv = w.shape
    labels = weights.load_labels(args.labels, seq_q, seq_kv) if args.labels else None
    batches = (weights.check_indices(args.batch, batch, "--batch element") if args.batch
               else list(range(min(batch, weights.MAX_BATCHES))))
    head_list = weights.check_indices(args.heads, heads, "--heads head") if args.heads else list(range(heads))
    with staged(args.out, "weights.html") as stage:
        figs = weights.draw(w, stage, args.npy, batches, head_list, labels)
        render.write_weights_html(os.path.join(stage, "weights.html"), stage, command=command, source=args.npy,
                                  generated=_now(), info_rows=weights.info_rows(args.npy, w), figures=figs)
    print(os.path.join(args.out, "weights.html"))
    return 0


def hosts_main(argv, command):
    from . import hosts

    p = Parser(prog=PROG, description="Machines side by side: bench result folders (or JSON) of several hosts.")
    p.add_argument("runs", nargs="+", metavar="RESULT_DIR", help="results/<host>-<date>/ folders of scripts/bench.sh")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (created if missing)")
    args = p.parse_intermixed_args(argv)
    machines = hosts.load_hosts(args.runs)
    rows = hosts.host_rows(machines)
    md = hosts.markdown(machines, rows, command, _now())
    with staged(args.out, "hosts.html") as stage:
        pngs = hosts.plot(machines, rows, stage)
        with open(os.path.join(stage, "hosts.md"), "w") as f:
            f.write(md)
        with open(os.path.join(stage, "hosts.html"), "w") as f:
            f.write(hosts.html(md, pngs))
    print(os.path.join(args.out, "hosts.html"))
    return 0


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    command = PROG + (" " + shlex.join(argv) if argv else "")
    try:
        if argv and argv[0] == "weights":
            return weights_main(argv[1:], command)
        # Result folders (results/hostA results/hostB ...): the machines side by side.
        if argv and argv[0] == "hosts":
            return hosts_main(argv[1:], command)
        inputs = [a for i, a in enumerate(argv) if not a.startswith("-") and (i == 0 or argv[i - 1] != "--out")]
        if inputs and os.path.isdir(inputs[0]):
            return hosts_main(argv, command)
        return report_main(argv[1:] if argv and argv[0] == "report" else argv, command)
    except UsageError as e:
        _error(e)
        return 2
    except ReportError as e:
        _error(e)
        return 1
