"""python -m attune_regress {compare,record,trend,baseline} ...

Exit status: 0 fine, 1 a REGRESSION (compare), 2 bad input or runs that must not be compared,
3 no stored baseline for this machine (baseline path).
"""
from __future__ import annotations

import argparse
import os
import sys

from . import baseline, benchjson, compare as cmp, history
from .benchjson import InputError

EXIT_OK, EXIT_REGRESSION, EXIT_INPUT, EXIT_NO_BASELINE = 0, 1, 2, 3


def warn(msg: str) -> None:
    print("warning: " + msg, file=sys.stderr)


def cmd_compare(a) -> int:
    if a.threshold <= 0:
        raise InputError("--threshold must be a positive percentage (got %g)" % a.threshold)
    thresholds = cmp.Thresholds.from_file(a.threshold, a.thresholds) if a.thresholds \
        else cmp.Thresholds(a.threshold)
    base = benchjson.load(a.baseline)
    new = benchjson.load(a.new)
    refusals, warnings = benchjson.provenance_differences(base, new)
    if refusals:
        raise InputError("refusing to compare runs from different machine configurations: "
                         + "; ".join(refusals))
    for w in warnings + [benchjson.busy_warning(r) for r in (base, new)]:
        if w:
            warn(w)
    for name in new.skipped:
        warn("%s reported an error in the new run (not compared)" % name)
    result = cmp.compare(base, new, thresholds, a.alpha)
    sys.stdout.write(cmp.render_text(result, base, new))
    if a.markdown:
        benchjson.write_atomic(a.markdown, cmp.render_markdown(result, base, new).encode())
    return EXIT_REGRESSION if result.regressed else EXIT_OK


def cmd_record(a) -> int:
    run = benchjson.load(a.new)
    path, added, present, problems = history.record(run, a.history)
    for p in problems:
        warn(p + " (dropped; the other lines are kept)")
    print("%s: %d benchmark(s) recorded%s" % (path, added, ", %d already present" % present if present else ""))
    return EXIT_OK


def cmd_trend(a) -> int:
    from . import trend
    if not os.path.isdir(a.history):
        raise InputError("history folder %s does not exist" % a.history)
    written, problems, _ = trend.trend(a.history, a.out)
    for p in problems:
        warn(p)
    if not written:
        raise InputError("no history in %s (record runs first)" % a.history)
    print("%d plot(s) in %s" % (len(written), a.out))
    return EXIT_OK


def cmd_baseline(a) -> int:
    run = benchjson.load(a.new)
    if a.action == "update":
        dest = baseline.update(run, a.dir)
        print(dest)
        return EXIT_OK
    found = baseline.find(run, a.dir)
    if not found:
        print("no baseline for this machine configuration (%s) in %s; store one with "
              "'baseline update %s --dir %s'" % (run.fingerprint_hash(), a.dir, a.new, a.dir), file=sys.stderr)
        return EXIT_NO_BASELINE
    print(found)
    return EXIT_OK


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m attune_regress",
                                description="Regression tracking for attune_bench JSON results.")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("compare", help="compare a new run with a baseline run (exit 1 on a regression)")
    c.add_argument("baseline")
    c.add_argument("new")
    c.add_argument("--threshold", type=float, default=5.0, help="slowdown in percent that counts (default 5)")
    c.add_argument("--thresholds", metavar="FILE.json", help="per-benchmark thresholds {name_regex: percent}; "
                   "the first matching pattern wins, else --threshold")
    c.add_argument("--markdown", metavar="OUT.md", help="also write the report as markdown")
    c.add_argument("--alpha", type=float, default=0.05, help="family-wise significance level (default 0.05)")
    c.set_defaults(func=cmd_compare)

    r = sub.add_parser("record", help="append a run's per-benchmark summary to the history")
    r.add_argument("new")
    r.add_argument("--history", required=True, metavar="DIR")
    r.set_defaults(func=cmd_record)

    t = sub.add_parser("trend", help="one PNG per tracked benchmark, change points marked")
    t.add_argument("--history", required=True, metavar="DIR")
    t.add_argument("--out", required=True, metavar="DIR")
    t.set_defaults(func=cmd_trend)

    b = sub.add_parser("baseline", help="stored baselines per machine fingerprint")
    bsub = b.add_subparsers(dest="action", required=True)
    for action, text in (("update", "store NEW.json as this machine's baseline"),
                         ("path", "print this machine's baseline (exit 3 if none)")):
        x = bsub.add_parser(action, help=text)
        x.add_argument("new")
        x.add_argument("--dir", default="bench/baselines")
        x.set_defaults(func=cmd_baseline)
    return p


def main(argv=None) -> int:
    a = parser().parse_args(argv)
    try:
        return a.func(a)
    except InputError as e:
        print("error: %s" % e, file=sys.stderr)
        return EXIT_INPUT
