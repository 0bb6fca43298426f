"""Proof of the gate on this machine: how often it cries wolf, how often it catches a real
slowdown, and the smallest slowdown it catches reliably.

  (a) A/A: N paired sessions of one build against itself (the regression set, the paired
      defaults). Every REGRESSION is a false alarm; counted per comparison (exit 1) and per
      benchmark, with a Clopper-Pearson 95% upper bound on the rate. When bench/baselines holds a
      baseline for this machine, every session's A side is also compared with it, with its
      thresholds.json (the stored-baseline mode CI uses, across hours or days).
  (b) A/B: M paired sessions where B runs with flags that cost a known amount (default
      `--inject-slowdown 5`: after each timed call the bench spins for 5% of that call's own
      duration, the same cost on every CPU; a code change such as `--block-q 120` costs 6% on an
      Intel Xeon and nothing on an AMD Zen 3). Each benchmark's true cost is estimated from all M sessions pooled; a detection is a REGRESSION on a benchmark whose true cost reaches its
      threshold, and the comparison's exit status 1.
  (c) Sweep: the A/A sessions' new sides scaled by 1 + s (s from --sweep, percent) and judged
      again: the detection rate as a function of a slowdown injected into measured noise; the
      smallest s detected in >= 90% of the benchmark comparisons is reported.
A/A and A/B share sessions: each runs the arm A, its twin A2 (A/A: A vs A2) and, in M of them
spread evenly, B (A/B: A vs B), so drift during the proof reaches both alike and A runs once for
both. Writes OUT/summary.json, OUT/summary.md and OUT/proof.png; the runs stay in OUT/sessions/.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time

from . import benchjson, benchname, calibration, compare as cmp, paired, suite
from .benchjson import BenchRun, InputError, write_atomic

DEFAULT_SLOWDOWN = "--inject-slowdown 5"
DETECT_RATE = 0.9
CALIBRATION_SESSIONS = 10


def add_session_arguments(p) -> None:
    """The session design, shared by `proof` and `calibrate` (a calibration holds for the design
    it was measured with)."""
    p.add_argument("--bench", default="build/bin/attune_bench", help="attune_bench binary (default build/bin/...)")
    p.add_argument("--rounds", type=int, default=5, help="rounds per session (default 5, as `paired`)")
    p.add_argument("--repetitions", type=int, default=2, help="repetitions per process (default 2)")
    p.add_argument("--order", choices=paired.ORDERS, default=paired.DEFAULT_ORDER,
                   help="session order (default %s: both arms at once, one per CPU, swapped every round; "
                   "abba alternates them)" % paired.DEFAULT_ORDER)
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--estimator", choices=calibration.ESTIMATORS, default="min",
                   help="the change a calibration's thresholds hold for: min (default: ratio of the fastest "
                   "repetitions) or hl (Hodges-Lehmann and the ratio of medians)")


def add_arguments(p) -> None:
    add_session_arguments(p)
    p.add_argument("--aa", type=int, default=30, help="A/A sessions (default 30)")
    p.add_argument("--ab", type=int, default=30, help="A/B sessions (default 30)")
    p.add_argument("--slowdown-args", default=DEFAULT_SLOWDOWN,
                   help="bench flags of the slower B side (default %r)" % DEFAULT_SLOWDOWN)
    p.add_argument("--threshold", type=float, default=5.0,
                   help="the threshold (uncalibrated) or the per-benchmark floor (calibrated), percent")
    p.add_argument("--thresholds", metavar="FILE.json",
                   help="fixed per-benchmark thresholds instead of a calibration")
    p.add_argument("--calibrate", type=int, default=CALIBRATION_SESSIONS, metavar="N",
                   help="first run N A/A sessions and judge the proof with the thresholds they give "
                   "(default %d; 0: no calibration)" % CALIBRATION_SESSIONS)
    p.add_argument("--calibration", metavar="NOISE.json",
                   help="judge with this calibration (from `calibrate`) instead of running one")
    p.add_argument("--baselines", default="bench/baselines", metavar="DIR",
                   help="stored baselines: A sides are also compared with this machine's (if any), with "
                   "DIR/thresholds.json as CI does")
    p.add_argument("--sweep", default="2,3,4,5,6,7,8,10,12", help="injected slowdowns in percent for (c)")
    p.add_argument("--out", metavar="DIR", help="default build/regress/proof-<time>")


def clopper_pearson_upper(k: int, n: int, level: float = 0.95) -> float:
    """One-sided upper confidence bound of a binomial rate (exact; bisection on the CDF)."""
    if n == 0:
        return 1.0
    if k >= n:
        return 1.0
    alpha = 1.0 - level

    def cdf(p):  # P(X <= k)
        return sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k + 1))

    lo, hi = k / n, 1.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if cdf(mid) > alpha:
            lo = mid
        else:
            hi = mid
    return hi


def session_plan(n_aa: int, n_ab: int) -> list:
    """max(n_aa, n_ab) sessions; each holds the arm A, plus A2 (its A/A twin) in n_aa of them and
    B (the slowdown) in n_ab, spread evenly: (has_a2, has_b) per session. Sharing A saves a third
    of the runs and puts A/A and A/B under the same conditions."""
    total = max(n_aa, n_ab)

    def member(i, count):
        return (i + 1) * count // total > i * count // total

    return [(member(i, n_aa), member(i, n_ab)) for i in range(total)]


def scaled(run: BenchRun, factor: float) -> BenchRun:
    return BenchRun(path=run.path, context=run.context, times={n: [t * factor for t in v] for n, v in run.times.items()},
                    skipped=list(run.skipped))


def judge(base: BenchRun, new: BenchRun, thresholds, alpha) -> dict:
    r = cmp.compare(base, new, thresholds, alpha)
    return {"regressed": r.regressed, "suite": r.suite.verdict, "suite_change": r.suite.geomean - 1.0,
            "rows": {row.name: {"verdict": row.verdict, "change": r.change(row) - 1.0,
                                "median_change": row.new_median / row.base_median - 1.0,
                                "threshold": row.threshold} for row in r.rows}}


def pooled_change(pairs, name) -> float:
    """True cost of B for one benchmark: median of all B repetitions over median of all A ones."""
    a = sorted(t for base, _ in pairs for t in base.times.get(name, []))
    b = sorted(t for _, new in pairs for t in new.times.get(name, []))
    if not a or not b:
        return float("nan")
    return cmp._median(b) / cmp._median(a) - 1.0


def calibrate(a, out=None) -> dict:
    """Runs a.sessions (or a.calibrate) A/A sessions of the design in `a` and derives the
    calibration (calibration.py's rule)."""
    n = getattr(a, "sessions", None) or a.calibrate
    if n < calibration.MIN_SESSIONS:
        raise InputError("a calibration needs at least %d A/A sessions (got %d)" % (calibration.MIN_SESSIONS, n))
    if not os.access(a.bench, os.X_OK):
        raise InputError("%s is not an executable (build attune_bench first)" % a.bench)
    out = out or os.path.join("build", "regress", "calibrate-" + time.strftime("%Y%m%d-%H%M%S"))
    sub = argparse.Namespace(**vars(a))
    sub.aa, sub.ab, sub.slowdown_args = n, 0, ""
    common = suite.bench_flags(suite.default_isa(a.bench))
    print("calibration: %d A/A sessions (%s, %d rounds x %d repetitions) in %s" % (
        n, a.order, a.rounds, a.repetitions, out), file=sys.stderr, flush=True)
    sessions = run_sessions(sub, common, cmp.Thresholds(getattr(a, "threshold", 5.0)), out)
    design = {"order": a.order, "rounds": a.rounds, "repetitions_per_run": a.repetitions,
              "bench_flags": " ".join(common)}
    return calibration.derive([(s[0], s[1]) for s in sessions["aa"]], getattr(a, "threshold", 5.0),
                              source="A/A sessions in " + out, design=design, estimator=a.estimator)


def run_sessions(a, common, thresholds, out) -> dict:
    plan = session_plan(a.aa, a.ab)
    sessions = {"aa": [], "ab": []}
    slow_args = shlex.split(a.slowdown_args)
    started = time.monotonic()
    for i, (has_a2, has_b) in enumerate(plan):
        kinds = "+".join(k for k, on in (("aa", has_a2), ("ab", has_b)) if on)
        d = os.path.join(out, "sessions", "%02d-%s" % (i, kinds))
        arms = [paired.Arm("a", a.bench)]
        if has_a2:
            arms.append(paired.Arm("a2", a.bench))
        if has_b:
            arms.append(paired.Arm("b", a.bench, slow_args))
        # A duet runs two arms at once: A against A2, and A against B, each a session of its own
        # (A runs in both); otherwise all arms share one session.
        groups = [arms] if a.order != "duet" else [[arms[0], other] for other in arms[1:]]
        runs = {}  # (the arm compared with A, label) -> run
        for group in groups:
            sub = d if len(groups) == 1 else os.path.join(d, group[1].label)
            merged = paired.session(group, common, a.rounds, a.repetitions, sub, a.order, seed=i)
            for other in [arm.label for arm in group[1:]]:
                for arm, path in zip(group, merged):
                    runs[(other, arm.label)] = benchjson.load(path)
        notes = []
        for kind, other, on in (("aa", "a2", has_a2), ("ab", "b", has_b)):
            if not on:
                continue
            base_run, new_run = runs[(other, "a")], runs[(other, other)]
            verdict = judge(base_run, new_run, thresholds, a.alpha)
            sessions[kind].append((base_run, new_run, verdict))
            alarms = sum(1 for r in verdict["rows"].values() if r["verdict"] == "REGRESSION")
            notes.append("%s exit %d%s" % (kind.upper(), 1 if verdict["regressed"] else 0,
                                          " (%d REGRESSION)" % alarms if alarms else ""))
        elapsed = time.monotonic() - started
        print("session %d/%d: %s  [%.0f s elapsed, ~%.0f s left]" % (
            i + 1, len(plan), ", ".join(notes), elapsed, elapsed / (i + 1) * (len(plan) - i - 1)),
            file=sys.stderr, flush=True)
    return sessions


def summarise(a, sessions, thresholds, stored_base, stored_thresholds=None) -> dict:
    aa, ab = sessions["aa"], sessions["ab"]
    names = sorted({n for s in aa + ab for n in s[2]["rows"]})
    out = {"settings": {"bench": a.bench, "aa_sessions": len(aa), "ab_sessions": len(ab),
                        "slowdown_args": a.slowdown_args, "rounds": a.rounds, "repetitions_per_run": a.repetitions,
                        "order": a.order, "alpha": a.alpha, "default_threshold": a.threshold,
                        "thresholds_file": a.thresholds, "benchmarks": len(names)}}
    # (a) A/A
    per_bench = {n: sum(1 for s in aa if s[2]["rows"].get(n, {}).get("verdict") == "REGRESSION") for n in names}
    tests = sum(len(s[2]["rows"]) for s in aa)
    alarms = sum(per_bench.values())
    comparisons = sum(1 for s in aa if s[2]["regressed"])
    out["aa"] = {
        "comparisons": len(aa), "false_alarm_comparisons": comparisons,
        "false_alarm_comparisons_upper95": clopper_pearson_upper(comparisons, len(aa)),
        "benchmark_tests": tests, "false_alarm_benchmarks": alarms,
        "false_alarm_benchmarks_upper95": clopper_pearson_upper(alarms, tests),
        "inconclusive_benchmarks": sum(1 for s in aa for r in s[2]["rows"].values() if r["verdict"] == "INCONCLUSIVE"),
        "suite_alarms": sum(1 for s in aa if s[2]["suite"] == "REGRESSION"),
        "suite_changes": [s[2]["suite_change"] for s in aa],
        "per_benchmark": {n: {"false_alarms": per_bench[n],
                              "changes": [s[2]["rows"][n]["change"] for s in aa if n in s[2]["rows"]]}
                          for n in names},
    }
    if stored_base is not None:
        stored = [judge(stored_base, s[0], stored_thresholds or thresholds, a.alpha) for s in aa + ab]
        out["aa_stored_baseline"] = {
            "baseline": stored_base.path, "thresholds_file": (stored_thresholds or thresholds).source, "baseline_revision": stored_base.context.get("attune_git_revision"),
            "baseline_date": stored_base.context.get("date"), "comparisons": len(stored),
            "false_alarm_comparisons": sum(1 for v in stored if v["regressed"]),
            "false_alarm_benchmarks": sum(1 for v in stored for r in v["rows"].values() if r["verdict"] == "REGRESSION"),
            "benchmark_tests": sum(len(v["rows"]) for v in stored),
            "changes": {n: [v["rows"][n]["change"] for v in stored if n in v["rows"]] for n in names},
        }
    # (b) A/B
    if ab:
        pairs = [(s[0], s[1]) for s in ab]
        rows = {}
        for n in names:
            true = pooled_change(pairs, n)
            thr = thresholds.for_name(n) / 100.0
            rows[n] = {"true_change": true, "threshold": thr,
                       "detections": sum(1 for s in ab if s[2]["rows"].get(n, {}).get("verdict") == "REGRESSION"),
                       "changes": [s[2]["rows"][n]["change"] for s in ab if n in s[2]["rows"]],
                       "should_detect": bool(true >= thr)}
        target = [n for n in names if rows[n]["should_detect"]]
        out["ab"] = {
            "comparisons": len(ab), "detected_comparisons": sum(1 for s in ab if s[2]["regressed"]),
            "suite_detections": sum(1 for s in ab if s[2]["suite"] == "REGRESSION"),
            "benchmark_detections": sum(1 for s in ab for r in s[2]["rows"].values() if r["verdict"] == "REGRESSION"),
            "benchmark_tests": sum(len(s[2]["rows"]) for s in ab),
            "suite_changes": [s[2]["suite_change"] for s in ab],
            "per_benchmark": rows, "targets": target,
            "target_detections": sum(rows[n]["detections"] for n in target),
            "target_tests": len(target) * len(ab),
            "below_threshold_alarms": sum(rows[n]["detections"] for n in names if n not in target),
        }
    # (c) injected slowdowns on the A/A noise
    sweep = []
    for pct in [float(x) for x in a.sweep.split(",") if x.strip()]:
        factor = 1.0 + pct / 100.0
        hits = {n: 0 for n in names}
        totals = {n: 0 for n in names}
        comparisons_hit = 0
        for base, new, _ in aa:
            v = judge(base, scaled(new, factor), thresholds, a.alpha)
            comparisons_hit += v["regressed"]
            for n, r in v["rows"].items():
                totals[n] += 1
                hits[n] += r["verdict"] == "REGRESSION"
        rate = sum(hits.values()) / max(1, sum(totals.values()))
        sweep.append({"slowdown": pct / 100.0, "detection_rate": rate,
                      "comparison_detection_rate": comparisons_hit / max(1, len(aa)),
                      "per_benchmark": {n: hits[n] / totals[n] for n in names if totals[n]}})
    out["sweep"] = sweep
    reliable = [s["slowdown"] for s in sweep if s["detection_rate"] >= DETECT_RATE]
    out["smallest_reliable_slowdown"] = min(reliable) if reliable else None
    out["smallest_reliable_per_benchmark"] = {
        n: min([s["slowdown"] for s in sweep if s["per_benchmark"].get(n, 0) >= DETECT_RATE], default=None)
        for n in names}
    return out


def short(name: str) -> str:
    """attention/flash/avx512/b:1/hq:8/hkv:8/sq:512/skv:512/d:64/causal:0/t:1/real_time ->
    flash h8/8 s512/512 d64 (a 16-bit dt: is appended: "... d64 bf16")"""
    n = benchname.parse(name)
    if n is None:
        return name
    return "%s h%d/%d s%d/%d d%d%s%s" % (n.kernel, n.heads_q, n.heads_kv, n.seq_q, n.seq_kv, n.d_k,
                                         " causal" if n.causal else "", " " + n.dtype if n.dtype != "fp32" else "")


def pct(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else "%+.1f%%" % (100 * x)


def calibration_table(s: dict) -> list:
    cal = s.get("calibration")
    if not cal:
        return []
    out = ["Calibration (%d A/A comparisons before the proof; rule: %s):" % (cal["comparisons"], cal["rule"]), "",
           "| benchmark | A/A rms | largest | suite weight | threshold |", "| --- | ---: | ---: | ---: | ---: |"]
    for n, b in sorted(cal["benchmarks"].items()):
        out.append("| `%s` | %.1f%% | %.1f%% | %.3f | %g%% |" % (short(n), 100 * b["rms"], 100 * b["largest"],
                                                              b["weight"], b["threshold"]))
    out += ["| suite (weighted) | %.1f%% | %.1f%% | | %g%% |" % (100 * cal["suite"]["rms"], 100 * cal["suite"]["largest"],
                                                               cal["suite"]["threshold"]), ""]
    return out


def markdown(s: dict) -> str:
    st, aa = s["settings"], s["aa"]
    out = ["# attune regression gate: A/A and A/B proof", "",
           "Generated by `python3 -m attune_regress proof` (scripts/regress-proof.sh). %d A/A and %d A/B paired "
           "comparisons of the regression set (%d benchmarks; A, its twin A2 and B share sessions), %d rounds x %d "
           "repetitions per side (%s order); B runs `%s`. alpha %g, default threshold %g%%%s." % (
               st["aa_sessions"], st["ab_sessions"], st["benchmarks"], st["rounds"], st["repetitions_per_run"],
               st["order"], st["slowdown_args"], st["alpha"], st["default_threshold"],
               ", thresholds from `%s`" % st["thresholds_file"] if st["thresholds_file"] else ""), "",
           "Thresholds: %s." % st.get("thresholds", "?"), ""] + calibration_table(s) + [
           "## (a) A/A: false alarms", "",
           "- comparisons with exit 1: **%d / %d** (95%% upper bound of the rate %.0f%%); suite verdict REGRESSION: "
           "%d" % (aa["false_alarm_comparisons"], aa["comparisons"], 100 * aa["false_alarm_comparisons_upper95"],
                   aa.get("suite_alarms", 0)),
           "- benchmark verdicts REGRESSION: **%d / %d** (95%% upper bound %.1f%%); INCONCLUSIVE: %d" % (
               aa["false_alarm_benchmarks"], aa["benchmark_tests"], 100 * aa["false_alarm_benchmarks_upper95"],
               aa["inconclusive_benchmarks"]), "",
           "| benchmark | false alarms | median change | largest change |", "| --- | ---: | ---: | ---: |"]
    for n, r in aa["per_benchmark"].items():
        ch = sorted(r["changes"])
        out.append("| `%s` | %d | %s | %s |" % (short(n), r["false_alarms"], pct(ch[len(ch) // 2]) if ch else "n/a",
                                               pct(max(ch, key=abs)) if ch else "n/a"))
    if "aa_stored_baseline" in s:
        sb = s["aa_stored_baseline"]
        out += ["", "Every session's A side against the stored baseline `%s` (revision %s, %s), as CI compares "
                "(thresholds %s): %d / %d comparisons with exit 1, %d / %d benchmark verdicts REGRESSION." % (
                    sb["baseline"], sb["baseline_revision"], sb["baseline_date"],
                    "`%s`" % sb["thresholds_file"] if sb["thresholds_file"] else "as above",
                    sb["false_alarm_comparisons"], sb["comparisons"], sb["false_alarm_benchmarks"],
                    sb["benchmark_tests"])]
    if "ab" in s:
        ab = s["ab"]
        out += ["", "## (b) A/B: detections of `%s`" % st["slowdown_args"], "",
                "- comparisons with exit 1: **%d / %d**; by the suite verdict: %d; benchmark verdicts REGRESSION: "
                "%d / %d" % (ab["detected_comparisons"], ab["comparisons"], ab.get("suite_detections", 0),
                             ab.get("benchmark_detections", 0), ab.get("benchmark_tests", 0)),
                "- REGRESSION on benchmarks whose true cost reaches their threshold: **%d / %d**; on the others "
                "(cost below the threshold, a verdict there is not wrong but not required): %d" % (
                    ab["target_detections"], ab["target_tests"], ab["below_threshold_alarms"]), "",
                "| benchmark | true cost (pooled) | threshold | detections | median estimate |",
                "| --- | ---: | ---: | ---: | ---: |"]
        for n, r in ab["per_benchmark"].items():
            ch = sorted(r["changes"])
            out.append("| `%s` | %s | %g%% | %d / %d | %s |" % (short(n), pct(r["true_change"]), 100 * r["threshold"],
                                                              r["detections"], ab["comparisons"],
                                                              pct(ch[len(ch) // 2]) if ch else "n/a"))
    out += ["", "## (c) Slowdowns injected into the A/A noise", "",
            "Each A/A session's new side scaled by 1 + s and judged again (real noise, exact known change).", "",
            "| injected | benchmark verdicts REGRESSION | comparisons with exit 1 |", "| ---: | ---: | ---: |"]
    for sw in s["sweep"]:
        out.append("| %+.0f%% | %.0f%% | %.0f%% |" % (100 * sw["slowdown"], 100 * sw["detection_rate"],
                                                    100 * sw["comparison_detection_rate"]))
    out += ["", "Smallest injected slowdown caught in >= %d%% of benchmark comparisons: **%s**." % (
        100 * DETECT_RATE, pct(s["smallest_reliable_slowdown"]) if s["smallest_reliable_slowdown"] else "none swept"),
        "", "![A/A and A/B](proof.png)", ""]
    return "\n".join(out)


def figure(s: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = list(s["aa"]["per_benchmark"])
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 0.55 * len(names) + 2.5), gridspec_kw={"width_ratios": [3, 2]})
    for i, n in enumerate(names):
        y = len(names) - 1 - i
        aa = [100 * c for c in s["aa"]["per_benchmark"][n]["changes"]]
        ax.scatter(aa, [y + 0.12] * len(aa), s=14, color="0.45", alpha=0.7, label="A/A" if i == 0 else None)
        if "ab" in s:
            r = s["ab"]["per_benchmark"][n]
            ab = [100 * c for c in r["changes"]]
            ax.scatter(ab, [y - 0.12] * len(ab), s=14, color="tab:red", alpha=0.7,
                       label="A/B (%s)" % s["settings"]["slowdown_args"] if i == 0 else None)
            if not math.isnan(r["true_change"]):
                ax.plot([100 * r["true_change"]] * 2, [y - 0.3, y + 0.05], color="tab:red", lw=1)
            thr = 100 * r["threshold"]
        else:
            thr = s["settings"]["default_threshold"]
        ax.plot([thr, thr], [y - 0.4, y + 0.4], color="k", ls="--", lw=1, label="threshold" if i == 0 else None)
    ax.axvline(0, color="0.8", lw=0.8, zorder=0)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels([short(n) for n in reversed(names)], fontsize=8)
    ax.set_xlabel("estimated change new/base (Hodges-Lehmann), %")
    ax.set_title("A/A and A/B estimates vs threshold (red tick: pooled true cost)", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    xs = [100 * sw["slowdown"] for sw in s["sweep"]]
    bx.plot(xs, [100 * sw["detection_rate"] for sw in s["sweep"]], "o-", color="tab:blue",
            label="injected into A/A noise (benchmarks)")
    bx.plot(xs, [100 * sw["comparison_detection_rate"] for sw in s["sweep"]], "s--", color="tab:blue", alpha=0.5,
            label="injected (comparisons, exit 1)")
    if "ab" in s:
        pts = [(100 * r["true_change"], 100 * r["detections"] / max(1, s["ab"]["comparisons"]))
               for r in s["ab"]["per_benchmark"].values() if not math.isnan(r["true_change"])]
        bx.scatter([p[0] for p in pts], [p[1] for p in pts], color="tab:red", zorder=3,
                   label="real A/B, per benchmark")
    bx.axhline(100 * DETECT_RATE, color="0.6", ls=":", lw=1)
    bx.axvline(s["settings"]["default_threshold"], color="k", ls="--", lw=1)
    bx.set_xlabel("slowdown, %")
    bx.set_ylabel("REGRESSION verdicts, %")
    bx.set_ylim(-3, 103)
    bx.set_title("detection rate", fontsize=10)
    bx.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(a) -> int:
    if a.aa < 1 or a.ab < 0:
        raise InputError("--aa must be >= 1 and --ab >= 0")
    if not os.access(a.bench, os.X_OK):
        raise InputError("%s is not an executable (build attune_bench first)" % a.bench)
    if a.thresholds and a.calibration:
        raise InputError("--thresholds and --calibration are alternatives (give one)")
    if a.calibrate < 0:
        raise InputError("--calibrate must be >= 0")
    out = a.out or os.path.join("build", "regress", "proof-" + time.strftime("%Y%m%d-%H%M%S"))
    started = time.monotonic()
    cal = None
    if a.thresholds:
        thresholds = cmp.Thresholds.from_file(a.threshold, a.thresholds)
    elif a.calibration:
        cal = calibration.load(a.calibration)
        thresholds = calibration.thresholds(cal, a.calibration, a.threshold)
    elif a.calibrate:
        # Thresholds learned from A/A sessions of their own, never from the sessions they judge.
        cal = calibrate(a, os.path.join(out, "calibration"))
        path = calibration.write(cal, os.path.join(out, "calibration.json"))
        sys.stderr.write(calibration.render(cal))
        thresholds = calibration.thresholds(cal, path, a.threshold)
    else:
        thresholds = cmp.Thresholds(a.threshold)
    stored_thresholds = None
    ci_file = os.path.join(a.baselines, "thresholds.json")
    if os.path.isfile(ci_file):
        stored_thresholds = cmp.Thresholds.from_file(a.threshold, ci_file)
    os.makedirs(out, exist_ok=True)
    common = suite.bench_flags(suite.default_isa(a.bench))
    print("proof: %d A/A + %d A/B sessions in %s; thresholds %s" % (a.aa, a.ab, out, thresholds.describe()),
          file=sys.stderr, flush=True)
    sessions = run_sessions(a, common, thresholds, out)
    stored_base = None
    if sessions["aa"]:
        from . import baseline
        found = baseline.find(sessions["aa"][0][0], a.baselines)
        if found:
            stored_base = benchjson.load(found)
    summary = summarise(a, sessions, thresholds, stored_base, stored_thresholds)
    summary["settings"]["thresholds"] = thresholds.describe()
    if cal is not None:
        summary["calibration"] = cal
    summary["settings"]["seconds"] = round(time.monotonic() - started, 1)
    summary["settings"]["machine"] = sessions["aa"][0][0].fingerprint()
    summary["settings"]["revision"] = sessions["aa"][0][0].context.get("attune_git_revision")
    write_atomic(os.path.join(out, "summary.json"), (json.dumps(summary, indent=1) + "\n").encode())
    write_atomic(os.path.join(out, "summary.md"), markdown(summary).encode())
    figure(summary, os.path.join(out, "proof.png"))
    aa = summary["aa"]
    print("A/A: %d/%d comparisons and %d/%d benchmark verdicts REGRESSION" % (
        aa["false_alarm_comparisons"], aa["comparisons"], aa["false_alarm_benchmarks"], aa["benchmark_tests"]))
    if "ab" in summary:
        ab = summary["ab"]
        print("A/B: %d/%d comparisons exit 1; %d/%d detections on benchmarks costing >= their threshold" % (
            ab["detected_comparisons"], ab["comparisons"], ab["target_detections"], ab["target_tests"]))
    smallest = summary["smallest_reliable_slowdown"]
    print("smallest injected slowdown caught >= %d%%: %s" % (100 * DETECT_RATE,
                                                             pct(smallest) if smallest else "none of those swept"))
    print("%s/summary.md, summary.json, proof.png (%.0f s)" % (out, time.monotonic() - started))
    return 0
