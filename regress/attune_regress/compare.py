"""Stored-baseline comparison of two attune_bench runs: per-benchmark verdicts and the suite's
geometric-mean ratio.

Per benchmark present in both runs (matched by name), from the per-repetition real_time:
  ratio    Hodges-Lehmann estimate of new/base: the median of all pairwise ratios new_j/base_i
  CI       its rank-based (Moses) interval at level 1 - alpha (two-sided)
  p        one-sided Mann-Whitney U, "new is slower" (and, separately, "new is faster"),
           Holm-corrected across the compared benchmarks
  verdict  REGRESSION   Holm p(slower) < alpha and ratio >= 1 + T
           IMPROVEMENT  Holm p(faster) < alpha and ratio <= 1 / (1 + T)
           (both for the HL ratio and for median(new)/median(base): with bimodal repetitions
           the two can disagree, and a verdict needs both estimates past the threshold)
           OK           the CI's upper end < 1 + T (no slowdown of T or more is plausible)
           INCONCLUSIVE otherwise: rerun with more repetitions
with T the benchmark's threshold (percent / 100). The suite: the geometric mean over benchmarks of
median(new)/median(base), with a percentile bootstrap interval (fixed seed), judged with the
suite threshold (by default the default one): REGRESSION when the interval lies above 1 and the
estimate >= 1 + T, IMPROVEMENT symmetrically, OK when the interval's upper end < 1 + T, else
INCONCLUSIVE.
"""
from __future__ import annotations

import json
import math
import re

import numpy as np
from dataclasses import dataclass, field

from . import stats
from .benchjson import MIN_REPETITIONS, BenchRun, InputError

SEVERITY = {"REGRESSION": 0, "INCONCLUSIVE": 1, "IMPROVEMENT": 2, "OK": 3}


def _check_percent(what: str, value) -> None:
    if isinstance(value, bool) or not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise InputError("%s must be a positive percentage (got %r)" % (what, value))


class Thresholds:
    """Percent thresholds per benchmark: the first pattern (file order) that re.search-matches
    the name wins, else the default. The suite's geometric mean is judged with `suite` (by
    default the default)."""

    def __init__(self, default: float, patterns=(), suite=None):
        _check_percent("--threshold", default)
        if suite is not None:
            _check_percent("the suite threshold", suite)
        self.default = float(default)
        self.suite = float(suite) if suite is not None else self.default
        self.patterns = list(patterns)
        self.source = None  # the file it was read from, for reports
        self.exact = {}     # name -> percent (a calibration's own thresholds; before the patterns)
        self.weights = None  # name -> weight of the suite change (a calibration's); None: equal weights
        self.estimator = "hl"  # "hl": Hodges-Lehmann and median ratio; "min": ratio of the fastest repetitions
        self.description = None  # why these thresholds, for reports

    def describe(self) -> str:
        if self.description:
            return self.description
        if self.source:
            return "from %s (default %g%%, suite %g%%)" % (self.source, self.default, self.suite)
        return "%g%% for every benchmark and the suite (not calibrated for this machine)" % self.default

    @classmethod
    def from_file(cls, default: float, path: str) -> "Thresholds":
        """Either {name_regex: percent, ...} or {"default": percent, "suite": percent,
        "patterns": {name_regex: percent, ...}} (all three optional; "default" replaces
        --threshold)."""
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise InputError("cannot read thresholds file %s: %s" % (path, e.strerror or e))
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError("thresholds file %s is not valid JSON (%s)" % (path, e))
        if not isinstance(data, dict):
            raise InputError("thresholds file %s must hold one object {name_regex: percent}" % path)
        suite = None
        if isinstance(data.get("patterns"), dict):
            unknown = sorted(set(data) - {"default", "suite", "patterns", "comment"})
            if unknown:
                raise InputError("thresholds file %s: unknown key(s) %s (default, suite, patterns, comment)"
                                 % (path, ", ".join(unknown)))
            for key in ("default", "suite"):
                if key in data and (isinstance(data[key], bool) or not isinstance(data[key], (int, float))
                                    or not math.isfinite(data[key]) or data[key] <= 0):
                    raise InputError("thresholds file %s: %r needs a positive percentage, got %r"
                                     % (path, key, data[key]))
            default = data.get("default", default)
            suite = data.get("suite")
            data = data["patterns"]
        patterns = []
        for pattern, pct in data.items():
            if isinstance(pct, bool) or not isinstance(pct, (int, float)) or not math.isfinite(pct) or pct <= 0:
                raise InputError("thresholds file %s: %r needs a positive percentage, got %r" % (path, pattern, pct))
            try:
                patterns.append((re.compile(pattern), float(pct)))
            except re.error as e:
                raise InputError("thresholds file %s: bad regex %r (%s)" % (path, pattern, e))
        t = cls(default, patterns, suite)
        t.source = path
        return t

    def for_name(self, name: str) -> float:
        if name in self.exact:
            return self.exact[name]
        for regex, pct in self.patterns:
            if regex.search(name):
                return pct
        return self.default


@dataclass
class Row:
    name: str
    n_base: int
    n_new: int
    base_median: float  # seconds
    new_median: float
    ratio: float        # Hodges-Lehmann new/base
    ci_low: float
    ci_high: float
    p_slower: float
    p_faster: float
    method: str
    threshold: float    # percent
    p_slower_holm: float = 1.0
    p_faster_holm: float = 1.0
    verdict: str = ""
    min_ratio: float = 1.0  # fastest new repetition over fastest base one


@dataclass
class Suite:
    geomean: float
    ci_low: float
    ci_high: float
    threshold: float
    verdict: str
    weighted: bool = False  # weights from a calibration (quiet benchmarks count more)


@dataclass
class Result:
    rows: list
    suite: Suite
    alpha: float
    only_base: list = field(default_factory=list)
    only_new: list = field(default_factory=list)
    threshold_source: str = ""
    estimator: str = "hl"

    def change(self, row) -> float:
        """The estimate of new/base the verdict judged."""
        return row.min_ratio if self.estimator == "min" else row.ratio

    @property
    def regressed(self) -> bool:
        return any(r.verdict == "REGRESSION" for r in self.rows) or self.suite.verdict == "REGRESSION"


def judge(ratio, ci_low, ci_high, p_slower, p_faster, threshold_pct, alpha, median_ratio=None) -> str:
    """The verdict rules of the module docstring; with median_ratio given, both estimates of the
    change (Hodges-Lehmann and the ratio of medians) must reach the threshold."""
    limit = 1.0 + threshold_pct / 100.0
    slow = ratio if median_ratio is None else min(ratio, median_ratio)
    fast = ratio if median_ratio is None else max(ratio, median_ratio)
    if p_slower < alpha and slow >= limit:
        return "REGRESSION"
    if p_faster < alpha and fast <= 1.0 / limit:
        return "IMPROVEMENT"
    if ci_high < limit:
        return "OK"
    return "INCONCLUSIVE"


def compare(base: BenchRun, new: BenchRun, thresholds: Thresholds, alpha: float = 0.05) -> Result:
    if not (0 < alpha < 1):
        raise InputError("--alpha must be in (0, 1) (got %r)" % alpha)
    common = [n for n in new.times if n in base.times]
    if not common:
        raise InputError("no benchmark name is common to %s and %s" % (base.path, new.path))
    short = ["%s (%d in baseline, %d in new)" % (n, len(base.times[n]), len(new.times[n]))
             for n in common if min(len(base.times[n]), len(new.times[n])) < MIN_REPETITIONS]
    if short:
        raise InputError("fewer than %d repetitions (run with --benchmark_repetitions=10): %s%s"
                         % (MIN_REPETITIONS, "; ".join(short[:3]), " ..." if len(short) > 3 else ""))
    level = 1.0 - alpha
    rows = []
    for name in common:
        x, y = base.times[name], new.times[name]
        mw = stats.mann_whitney(x, y)
        hl = stats.hodges_lehmann(x, y, level)
        rows.append(Row(name, len(x), len(y), _median(x), _median(y), hl.ratio, hl.ci_low, hl.ci_high,
                        mw.p_greater, mw.p_less, mw.method, thresholds.for_name(name), min_ratio=min(y) / min(x)))
    for r, ps, pf in zip(rows, stats.holm([r.p_slower for r in rows]), stats.holm([r.p_faster for r in rows])):
        r.p_slower_holm, r.p_faster_holm = ps, pf
        if thresholds.estimator == "min":
            # The best-case time: a repetition slowed by whatever ran beside it never sets it.
            r.verdict = judge(r.min_ratio, r.ci_low, r.ci_high, ps, pf, r.threshold, alpha)
        else:
            r.verdict = judge(r.ratio, r.ci_low, r.ci_high, ps, pf, r.threshold, alpha, r.new_median / r.base_median)

    weights = None
    if thresholds.weights:
        weights = [thresholds.weights.get(n, 0.0) for n in common]
        if sum(weights) <= 0:
            weights = None
    geo, lo, hi = stats.suite_bootstrap([(base.times[n], new.times[n]) for n in common], level, weights=weights,
                                        statistic=np.min if thresholds.estimator == "min" else np.median)
    limit = 1.0 + thresholds.suite / 100.0
    if lo > 1.0 and geo >= limit:
        sv = "REGRESSION"
    elif hi < 1.0 and geo <= 1.0 / limit:
        sv = "IMPROVEMENT"
    elif hi < limit:
        sv = "OK"
    else:
        sv = "INCONCLUSIVE"
    rows.sort(key=lambda r: (SEVERITY[r.verdict], r.name))
    return Result(rows, Suite(geo, lo, hi, thresholds.suite, sv, weights is not None), alpha,
                  only_base=sorted(set(base.times) - set(new.times)),
                  only_new=sorted(set(new.times) - set(base.times)), threshold_source=thresholds.describe(),
                  estimator=thresholds.estimator)


def _median(v) -> float:
    s = sorted(v)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def fmt_time(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return "%.4g %s" % (seconds / scale, unit)
    return "%.4g ns" % (seconds / 1e-9)


def fmt_pct(ratio: float) -> str:
    if ratio == 0.0:
        return "-inf"
    if math.isinf(ratio):
        return "+inf"
    return "%+.1f%%" % ((ratio - 1.0) * 100.0)


def fmt_ci(lo: float, hi: float) -> str:
    return "[%s, %s]" % (fmt_pct(lo), fmt_pct(hi))


def fmt_p(p: float) -> str:
    return "%.3g" % p if p >= 1e-4 else "<1e-4"


def counts(result: Result) -> str:
    c = {}
    for r in result.rows:
        c[r.verdict] = c.get(r.verdict, 0) + 1
    return ", ".join("%d %s" % (c[v], v) for v in sorted(c, key=SEVERITY.get))


def render_text(result: Result, base: BenchRun, new: BenchRun) -> str:
    header = ("verdict", "change", "%d%% CI" % round(100 * (1 - result.alpha)), "p(holm)", "base", "new", "n",
              "thr", "benchmark")
    lines = []
    for r in result.rows:
        p = r.p_faster_holm if r.verdict == "IMPROVEMENT" else r.p_slower_holm
        lines.append((r.verdict, fmt_pct(result.change(r)), fmt_ci(r.ci_low, r.ci_high), fmt_p(p), fmt_time(r.base_median),
                      fmt_time(r.new_median), "%d/%d" % (r.n_base, r.n_new), "%g%%" % r.threshold, r.name))
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    out = []
    for line in [header] + lines:
        out.append("  ".join(c.ljust(w) if i in (0, 8) else c.rjust(w)
                             for i, (c, w) in enumerate(zip(line, widths))).rstrip())
    s = result.suite
    out.append("")
    out.append("suite: %sgeometric mean of %s ratios %s, %d%% CI %s (bootstrap), threshold %g%%: %s"
               % ("weighted " if s.weighted else "", "fastest-repetition" if result.estimator == "min" else "median",
                  fmt_pct(s.geomean), round(100 * (1 - result.alpha)), fmt_ci(s.ci_low, s.ci_high), s.threshold,
                  s.verdict))
    out.append("benchmarks: %s" % counts(result))
    if result.threshold_source:
        out.append("thresholds: " + result.threshold_source)
    if result.only_base or result.only_new:
        out.append("not compared: %d only in the baseline, %d only in the new run"
                   % (len(result.only_base), len(result.only_new)))
    out.append("baseline %s (%s), new %s (%s)" % (
        base.path, base.context.get("attune_git_revision", "?"), new.path, new.context.get("attune_git_revision", "?")))
    return "\n".join(out) + "\n"


def render_markdown(result: Result, base: BenchRun, new: BenchRun) -> str:
    s = result.suite
    level = round(100 * (1 - result.alpha))
    ctx = new.context
    out = [
        "## attune regression check: %s" % ("REGRESSION" if result.regressed else "no regression"),
        "",
        "Baseline `%s` (%s, %s) vs new `%s` (%s, %s) on %s, %s cores, ISA %s, preset %s."
        % (base.path, base.context.get("attune_git_revision", "?"), base.context.get("date", "?"),
           new.path, ctx.get("attune_git_revision", "?"), ctx.get("date", "?"), ctx.get("cpu_model", "?"),
           ctx.get("cores", "?"), ctx.get("isa_default", "?"), ctx.get("preset", "?")),
        "",
        "**Suite**: %sgeometric mean of %s ratios %s, %d%% CI %s, threshold %g%%: **%s**. Benchmarks: %s."
        % ("weighted " if s.weighted else "", "fastest-repetition" if result.estimator == "min" else "median",
           fmt_pct(s.geomean), level, fmt_ci(s.ci_low, s.ci_high), s.threshold, s.verdict, counts(result)),
        "",
        "Thresholds: %s." % result.threshold_source,
        "",
        "| verdict | change | %d%% CI | p (Holm) | base median | new median | n | threshold | benchmark |" % level,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in result.rows:
        p = r.p_faster_holm if r.verdict == "IMPROVEMENT" else r.p_slower_holm
        verdict = "**%s**" % r.verdict if r.verdict == "REGRESSION" else r.verdict
        out.append("| %s | %s | %s | %s | %s | %s | %d/%d | %g%% | `%s` |" % (
            verdict, fmt_pct(result.change(r)), fmt_ci(r.ci_low, r.ci_high), fmt_p(p), fmt_time(r.base_median),
            fmt_time(r.new_median), r.n_base, r.n_new, r.threshold, r.name))
    if result.only_base or result.only_new:
        out += ["", "Not compared: %d only in the baseline, %d only in the new run."
                % (len(result.only_base), len(result.only_new))]
    out += ["",
            "Change: Hodges-Lehmann estimate of new/base (median of all pairwise ratios of repetitions), "
            "with its rank-based interval. p: one-sided Mann-Whitney U (new slower; new faster for "
            "improvements), Holm-corrected across benchmarks. REGRESSION: p < %g and both the change and "
            "the ratio of the medians >= threshold; "
            "OK: the interval's upper end is below the threshold; INCONCLUSIVE: rerun with more repetitions."
            % result.alpha, ""]
    return "\n".join(out)
