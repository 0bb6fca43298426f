"""Per-machine calibration: the gate's thresholds learned from the machine's own A/A comparisons.

A machine kind's noise differs a lot (an Intel Xeon VM: single benchmarks within 6% of themselves;
an AMD EPYC VM: memory-bound decode rows up to 17%). One fixed threshold either cries wolf on the
noisy kind or misses slowdowns on the quiet one, so the thresholds come from A/A comparisons of one
build against itself, run on the machine with the gate's own design (`calibrate`, or the first
sessions of a proof), by this rule:

  change            by default (`--estimator min`) the ratio of the fastest repetitions of each
                    side: on a 2-vCPU VM a repetition is either undisturbed (within 0.5% of the
                    others) or slowed by 20-70% by what runs beside it, so the best case is the
                    stable statistic (Chen & Revels, "Robust benchmarking in noisy environments");
                    `hl` keeps the Hodges-Lehmann change and the ratio of medians
  per benchmark b   s_b = root mean square of that log change over the n A/A comparisons, i.e.
                    the spread of an unchanged build
                    u_b = s_b x sqrt(n / chi2_0.05(n)): its 95% upper confidence bound (a few
                    comparisons underestimate a spread easily; the bound shrinks towards s_b as
                    the history grows: x1.59 at n = 10, x1.27 at n = 30)
                    T_b = max(floor, K x u_b), rounded up to 0.5%  (floor: --threshold, 5%)
  suite             weights w_b = 1 / max(1%, s_b)^2, normalised: quiet benchmarks weigh more,
                    none as if it were quieter than 1%
                    suite change = exp(sum_b w_b log change_b) (medians for `hl`)
                    s_suite = its rms over the same A/A comparisons, u_suite its upper bound
                    T_suite = max(SUITE_FLOOR, K x u_suite), rounded up to 0.5%

K = 3 standard deviations (of the bound) keeps an A/A false alarm under about 1 in 700 per verdict
for normal noise, before the Holm-corrected significance every verdict also needs, so a
30-comparison proof of 8 benchmarks and a suite expects none. The suite's
pooled, weighted change is what catches a small slowdown that reaches every benchmark (a 5%
slowdown of the whole library) on a machine whose single benchmarks are too noisy for 5%; a
slowdown confined to one benchmark must reach that benchmark's T_b.

The file (bench/baselines/noise-<fingerprint hash>.json for CI, or a proof's calibration.json)
records the rule's inputs, so `compare` reports which thresholds it used and why.
"""
from __future__ import annotations

import datetime
import json
import math
import os

import numpy as np

from . import compare as cmp
from .benchjson import BenchRun, InputError, write_atomic

SCHEMA = 1
K_BENCH = 3.0
K_SUITE = 3.0
SUITE_FLOOR = 2.0
MIN_SESSIONS = 5
RULE = ("T_b = max(%s, %.1f x u_b), u_b = 95%% upper bound of the rms A/A change of b; suite weights 1/max(1%%, rms_b)^2; "
        "T_suite = max(%g%%, %.1f x the same bound of the weighted suite change); rounded up to 0.5%%")


def spread_bound(n: int) -> float:
    """sqrt(n / chi2_0.05(n)): the factor from an rms of n zero-mean normal values to the one-sided
    95% upper confidence bound of their standard deviation (Wilson-Hilferty's chi-square quantile)."""
    z = -1.6448536269514722
    q = n * (1.0 - 2.0 / (9.0 * n) + z * math.sqrt(2.0 / (9.0 * n))) ** 3
    return math.sqrt(n / q)


def _round_up(pct: float) -> float:
    return math.ceil(pct * 2.0 - 1e-9) / 2.0


ESTIMATORS = ("min", "hl")
WEIGHT_FLOOR = 0.01  # no benchmark is trusted to be quieter than 1% when the suite is weighted


def _log_changes(pairs, estimator):
    """{name: [log change per comparison]} as the verdicts judge it (HL, or the ratio of the
    fastest repetitions), and {name: [log change per comparison]} as the suite sums it (ratio of
    medians, or of the fastest repetitions)."""
    one, suite = {}, {}
    for base, new in pairs:
        for name in new.times:
            if name not in base.times:
                continue
            lx, ly = np.log(base.times[name]), np.log(new.times[name])
            if estimator == "min":
                d = float(ly.min() - lx.min())
                one.setdefault(name, []).append(d)
                suite.setdefault(name, []).append(d)
            else:
                one.setdefault(name, []).append(float(np.median((ly[:, None] - lx[None, :]).ravel())))
                suite.setdefault(name, []).append(float(np.median(ly) - np.median(lx)))
    return one, suite


def derive(pairs, floor: float = 5.0, source: str = "", design: dict | None = None, estimator: str = "min") -> dict:
    """The calibration of A/A comparisons [(base run, new run), ...] (one build against itself)."""
    if estimator not in ESTIMATORS:
        raise InputError("--estimator must be one of %s (got %r)" % (", ".join(ESTIMATORS), estimator))
    if len(pairs) < MIN_SESSIONS:
        raise InputError("calibration needs at least %d A/A comparisons (got %d)" % (MIN_SESSIONS, len(pairs)))
    cmp._check_percent("--threshold", floor)
    hl, med = _log_changes(pairs, estimator)
    names = sorted(n for n, v in hl.items() if len(v) == len(pairs))
    if not names:
        raise InputError("the A/A comparisons share no benchmark")
    rms = {n: max(1e-4, math.sqrt(float(np.mean(np.square(hl[n]))))) for n in names}
    inv = {n: 1.0 / max(WEIGHT_FLOOR, rms[n]) ** 2 for n in names}
    total = sum(inv.values())
    weights = {n: inv[n] / total for n in names}
    suite = [sum(weights[n] * med[n][i] for n in names) for i in range(len(pairs))]
    s_suite = math.sqrt(float(np.mean(np.square(suite))))
    bound = spread_bound(len(pairs))
    first = pairs[0][0]
    return {
        "schema": SCHEMA,
        "kind": "attune-regress-calibration",
        "rule": RULE % ("%g%%" % floor, K_BENCH, SUITE_FLOOR, K_SUITE),
        "comparisons": len(pairs),
        "source": source,
        "design": design or {},
        "fingerprint": first.fingerprint(),
        "cpu_model": first.context.get("cpu_model", "?"),
        "revision": first.context.get("attune_git_revision", "?"),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "floor": floor,
        "estimator": estimator,
        "benchmarks": {n: {"rms": rms[n], "largest": max(abs(v) for v in hl[n]), "weight": weights[n],
                           "threshold": max(floor, _round_up(K_BENCH * 100.0 * bound * rms[n]))} for n in names},
        "suite": {"rms": s_suite, "largest": max(abs(v) for v in suite),
                  "threshold": max(SUITE_FLOOR, _round_up(K_SUITE * 100.0 * bound * s_suite))},
        "spread_bound": bound,
    }


def write(cal: dict, path: str) -> str:
    write_atomic(path, (json.dumps(cal, indent=1, sort_keys=True) + "\n").encode())
    return path


def load(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise InputError("cannot read calibration %s: %s" % (path, e.strerror or e))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError("calibration %s is not valid JSON (%s)" % (path, e))
    ok = (isinstance(data, dict) and data.get("kind") == "attune-regress-calibration"
          and data.get("schema") == SCHEMA and isinstance(data.get("benchmarks"), dict) and data["benchmarks"]
          and isinstance(data.get("suite"), dict))
    if not ok:
        raise InputError("%s is not an attune_regress calibration (schema %d)" % (path, SCHEMA))
    for name, b in data["benchmarks"].items():
        for key in ("threshold", "weight", "rms"):
            v = b.get(key) if isinstance(b, dict) else None
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise InputError("calibration %s: benchmark %r needs a positive %s" % (path, name, key))
    t = data["suite"].get("threshold")
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
        raise InputError("calibration %s: the suite needs a positive threshold" % path)
    return data


def thresholds(cal: dict, path: str, default: float) -> cmp.Thresholds:
    """Thresholds of a calibration: each calibrated benchmark's own, the suite's, and the
    weights of the suite change; benchmarks it does not know get `default`."""
    t = cmp.Thresholds(default, suite=float(cal["suite"]["threshold"]))
    t.exact = {n: float(b["threshold"]) for n, b in cal["benchmarks"].items()}
    t.weights = {n: float(b["weight"]) for n, b in cal["benchmarks"].items()}
    t.estimator = cal.get("estimator", "hl")
    if t.estimator not in ESTIMATORS:
        raise InputError("calibration %s: unknown estimator %r" % (path, t.estimator))
    t.source = path
    t.description = "calibrated for %s from %d A/A comparisons (%s, revision %s; change = %s): %s" % (
        cal.get("cpu_model", "?"), cal.get("comparisons", 0), str(cal.get("date", "?"))[:10], cal.get("revision", "?"),
        "ratio of the fastest repetitions" if t.estimator == "min" else "Hodges-Lehmann", cal.get("rule", "?"))
    return t


def path_for(run: BenchRun, directory: str) -> str:
    return os.path.join(directory, "noise-%s.json" % run.fingerprint_hash())


def find(run: BenchRun, directory: str):
    p = path_for(run, directory)
    return p if os.path.isfile(p) else None


def render(cal: dict) -> str:
    from .proof import short
    out = ["calibration of %s (%d A/A comparisons, revision %s)" % (cal["cpu_model"], cal["comparisons"],
                                                                     cal["revision"]),
           "rule: " + cal["rule"], "",
           "%-44s %8s %8s %8s %10s" % ("benchmark", "rms", "largest", "weight", "threshold")]
    for n, b in sorted(cal["benchmarks"].items()):
        out.append("%-44s %7.2f%% %7.2f%% %8.3f %9.1f%%" % (short(n), 100 * b["rms"], 100 * b["largest"], b["weight"],
                                                            b["threshold"]))
    s = cal["suite"]
    out.append("%-44s %7.2f%% %7.2f%% %8s %9.1f%%" % ("suite (weighted)", 100 * s["rms"], 100 * s["largest"], "",
                                                      s["threshold"]))
    return "\n".join(out) + "\n"
