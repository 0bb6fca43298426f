"""Per-machine calibration: thresholds and suite weights learned from A/A noise (seeded data)."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from attune_regress import calibration, compare as cmp, stats
from attune_regress.benchjson import InputError
from regress_synth import bench_json, bench_name, noisy, run_of

QUIET = [bench_name(k, s, 64) for k in ("flash", "simd") for s in (128, 512)]
NOISY = bench_name("flash", 8192, 128)  # stands in for the memory-bound decode rows


def disturbed(rng, center, n, sigma=0.003, p=0.2):
    """What a 2-vCPU VM gives: repetitions within `sigma` of each other, except that each one is,
    with probability p, slowed by 20-70% by whatever ran beside it."""
    hit = rng.random(n) < p
    return noisy(rng, center, n, sigma) * np.where(hit, 1.0 + rng.uniform(0.2, 0.7, n), 1.0)


def aa_pairs(rng, n, quiet=0.003, loud=0.15, reps=10, shift=1.0, p=0.2):
    """n comparisons of one build against itself (the new side `shift` times slower)."""
    pairs = []
    for _ in range(n):
        base, new = {}, {}
        for i, name in enumerate(QUIET + [NOISY]):
            center = 1e-3 * (1 + i)
            if name == NOISY:
                base[name], new[name] = noisy(rng, center, reps, loud), noisy(rng, center * shift, reps, loud)
            else:
                base[name] = disturbed(rng, center, reps, quiet, p)
                new[name] = disturbed(rng, center * shift, reps, quiet, p)
        pairs.append((run_of(base), run_of(new)))
    return pairs


def test_thresholds_follow_each_benchmarks_own_noise():
    cal = calibration.derive(aa_pairs(np.random.default_rng(1), 12), floor=5.0)
    quiet = [cal["benchmarks"][n]["threshold"] for n in QUIET]
    loud = cal["benchmarks"][NOISY]["threshold"]
    assert all(t == 5.0 for t in quiet)  # the floor: their noise is far below it
    # 15% lognormal noise per repetition: the fastest of 10 spreads by ~8%; 3 x 1.5 x that
    assert 20.0 < loud < 60.0
    # weights: inverse variance, so the noisy benchmark counts for little in the suite
    assert cal["benchmarks"][NOISY]["weight"] < 0.05
    assert math.isclose(sum(b["weight"] for b in cal["benchmarks"].values()), 1.0, rel_tol=1e-9)
    assert cal["suite"]["threshold"] >= calibration.SUITE_FLOOR
    assert cal["comparisons"] == 12 and "upper bound" in cal["rule"] and cal["estimator"] == "min"
    assert 1.4 < cal["spread_bound"] < 1.6  # n = 12


def test_calibrated_gate_keeps_quiet_on_aa_and_catches_a_uniform_5_percent():
    rng = np.random.default_rng(7)
    cal = calibration.derive(aa_pairs(rng, 10), floor=5.0)
    t = calibration.thresholds(cal, "noise.json", 5.0)
    alarms = sum(cmp.compare(b, n, t).regressed for b, n in aa_pairs(rng, 40))
    assert alarms == 0
    caught = [cmp.compare(b, n, t) for b, n in aa_pairs(rng, 20, shift=1.05)]
    # the suite's weighted change (4 quiet benchmarks) carries it even where single verdicts don't
    assert sum(r.suite.verdict == "REGRESSION" for r in caught) >= 18
    assert sum(r.regressed for r in caught) >= 18


def test_the_fastest_repetitions_see_through_disturbed_ones_where_the_medians_do_not():
    rng = np.random.default_rng(17)
    spread = {}
    for estimator in ("min", "hl"):
        cal = calibration.derive(aa_pairs(rng, 12, p=0.35), floor=0.5, estimator=estimator)
        spread[estimator] = max(cal["benchmarks"][n]["rms"] for n in QUIET)
    assert spread["min"] < 0.01 < spread["hl"]


def test_a_slowdown_of_the_noisy_benchmark_alone_needs_its_own_threshold():
    rng = np.random.default_rng(3)
    t = calibration.thresholds(calibration.derive(aa_pairs(rng, 10), floor=5.0), "noise.json", 5.0)
    base, new = aa_pairs(rng, 1)[0]
    new.times[NOISY] = [x * 1.06 for x in new.times[NOISY]]
    r = cmp.compare(base, new, t)
    assert {row.name: row.verdict for row in r.rows}[NOISY] != "REGRESSION"
    new.times[NOISY] = [x * 1.6 for x in base.times[NOISY]]
    r = cmp.compare(base, new, t)
    assert {row.name: row.verdict for row in r.rows}[NOISY] == "REGRESSION"


def test_report_says_which_thresholds_and_why():
    rng = np.random.default_rng(5)
    cal = calibration.derive(aa_pairs(rng, 6), floor=5.0)
    t = calibration.thresholds(cal, "bench/baselines/noise-x.json", 5.0)
    base, new = aa_pairs(rng, 1)[0]
    r = cmp.compare(base, new, t)
    text = cmp.render_text(r, base, new)
    assert "thresholds: calibrated for AMD EPYC from 6 A/A comparisons" in text
    assert "weighted" in text
    plain = cmp.compare(base, new, cmp.Thresholds(5.0))
    assert "not calibrated for this machine" in cmp.render_text(plain, base, new)


def test_weighted_suite_bootstrap_matches_the_weighted_point_estimate():
    pairs = [([1.0, 1.0, 1.0], [1.1, 1.1, 1.1]), ([1.0, 1.0, 1.0], [1.0, 1.0, 1.0])]
    g, lo, hi = stats.suite_bootstrap(pairs, weights=[3.0, 1.0])
    assert math.isclose(g, math.exp(0.75 * math.log(1.1)), rel_tol=1e-12)
    assert lo <= g <= hi
    g_equal, _, _ = stats.suite_bootstrap(pairs)
    assert math.isclose(g_equal, math.sqrt(1.1), rel_tol=1e-12)
    with pytest.raises(ValueError):
        stats.suite_bootstrap(pairs, weights=[0.0, 0.0])


def test_too_few_comparisons_are_refused():
    with pytest.raises(InputError, match="at least 5"):
        calibration.derive(aa_pairs(np.random.default_rng(0), 3))


@pytest.mark.parametrize("content, message", [
    ("{", "not valid JSON"),
    ('{"kind": "something else"}', "not an attune_regress calibration"),
    ('{"kind": "attune-regress-calibration", "schema": 1, "suite": {"threshold": 3}, '
     '"benchmarks": {"x": {"threshold": -1, "weight": 1, "rms": 0.1}}}', "positive threshold"),
    ('{"kind": "attune-regress-calibration", "schema": 1, "suite": {"threshold": "3"}, '
     '"benchmarks": {"x": {"threshold": 5, "weight": 1, "rms": 0.1}}}', "suite needs a positive threshold"),
])
def test_bad_calibration_files(tmp_path, content, message):
    p = tmp_path / "noise.json"
    p.write_text(content)
    with pytest.raises(InputError, match=message):
        calibration.load(str(p))


REGRESS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def attune_regress(*args):
    env = dict(os.environ, PYTHONPATH=REGRESS)
    return subprocess.run([sys.executable, "-m", "attune_regress", *args], capture_output=True, text=True, env=env)


def _session_dirs(tmp_path, pairs):
    dirs = []
    for i, (base, new) in enumerate(pairs):
        d = tmp_path / ("s%02d" % i)
        d.mkdir()
        (d / "a.json").write_text(json.dumps(bench_json({n: v for n, v in base.times.items()}, unit="s")))
        (d / "a2.json").write_text(json.dumps(bench_json({n: v for n, v in new.times.items()}, unit="s")))
        dirs.append(str(d))
    return dirs


def test_cli_calibrate_from_sessions_then_compare_with_it(tmp_path):
    rng = np.random.default_rng(11)
    dirs = _session_dirs(tmp_path, aa_pairs(rng, 6))
    out = tmp_path / "baselines"
    p = attune_regress("calibrate", "--from", *dirs, "--store", str(out))
    assert p.returncode == 0, p.stderr
    stored = list(out.glob("noise-*.json"))
    assert len(stored) == 1 and str(stored[0]) in p.stdout
    assert "suite (weighted)" in p.stdout
    base, new = aa_pairs(rng, 1, shift=1.3)[0]
    b = tmp_path / "base.json"
    n = tmp_path / "new.json"
    b.write_text(json.dumps(bench_json(base.times, unit="s")))
    n.write_text(json.dumps(bench_json(new.times, unit="s")))
    p = attune_regress("compare", str(b), str(n), "--calibration",
                        str(stored[0]))
    assert p.returncode == 1, p.stdout + p.stderr
    assert "thresholds: calibrated for AMD EPYC from 6 A/A comparisons" in p.stdout
    # looked up by the machine's fingerprint, as regress.sh --paired does
    p = attune_regress("compare", str(b), str(n), "--calibrations", str(out))
    assert p.returncode == 1 and "thresholds: calibrated for AMD EPYC" in p.stdout
    p = attune_regress("compare", str(b), str(n), "--calibrations",
                        str(tmp_path / "nothing"))
    assert "not calibrated for this machine" in p.stdout
    p = attune_regress("compare", str(b), str(n), "--calibration",
                        str(stored[0]), "--thresholds", str(stored[0]))
    assert p.returncode == 2 and "alternatives" in p.stderr


def test_cli_calibrate_refuses_a_directory_without_sessions(tmp_path):
    p = attune_regress("calibrate", "--from", str(tmp_path))
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and "no A/A session" in p.stderr
