"""The gate on synthetic suites with known answers (seeded, so every run sees the same data)."""
import numpy as np
import pytest

from attune_regress import compare as cmp
from attune_regress.benchjson import InputError
from regress_synth import bench_name, noisy, run_of

NAMES = [bench_name(k, s, d) for k in ("flash", "simd") for s in (128, 512) for d in (64, 128)]


def suite(rng, shift=1.0, sigma=0.01, n=10, noise=None):
    """8 benchmarks, n repetitions each; the new run `shift` times slower."""
    base, new = {}, {}
    for i, name in enumerate(NAMES):
        center = 1e-3 * (1 + i)
        if noise is None:
            base[name], new[name] = noisy(rng, center, n, sigma), noisy(rng, center * shift, n, sigma)
        else:
            base[name], new[name] = center * noise(rng, n), center * shift * noise(rng, n)
    return run_of(base), run_of(new)


def verdicts(result):
    out = {}
    for r in result.rows:
        out[r.verdict] = out.get(r.verdict, 0) + 1
    return out


def test_aa_false_alarm_rate_is_at_most_5_percent():
    """200 seeded A/A trials of an 8-benchmark suite with 2% noise."""
    rng = np.random.default_rng(1)
    alarms = significant = 0
    for _ in range(200):
        base, new = suite(rng, 1.0, 0.02)
        r = cmp.compare(base, new, cmp.Thresholds(5.0))
        alarms += r.regressed
        # Holm alone (ignoring the threshold) must keep the family-wise error rate <= alpha.
        significant += any(row.p_slower_holm < 0.05 for row in r.rows)
    assert alarms <= 10          # the gate: <= 5% of identical runs flagged (here none)
    assert significant <= 10     # the test itself: family-wise rate <= 5%


def test_three_percent_shift_under_a_five_percent_threshold_is_not_a_regression():
    rng = np.random.default_rng(2)
    for _ in range(20):
        base, new = suite(rng, 1.03, 0.01)
        r = cmp.compare(base, new, cmp.Thresholds(5.0))
        assert not r.regressed
        assert verdicts(r).get("OK", 0) >= 6  # with 1% noise the interval rules out 5% for most


def test_ten_percent_shift_with_ten_repetitions_and_low_noise_is_a_regression():
    rng = np.random.default_rng(3)
    base, new = suite(rng, 1.10, 0.01)
    r = cmp.compare(base, new, cmp.Thresholds(5.0))
    assert verdicts(r) == {"REGRESSION": len(NAMES)}
    assert r.suite.verdict == "REGRESSION"
    assert r.suite.geomean == pytest.approx(1.10, abs=0.01)
    for row in r.rows:
        assert row.ci_low < 1.10 < row.ci_high
        assert row.p_slower_holm < 0.05


def test_improvement_is_symmetric():
    rng = np.random.default_rng(4)
    base, new = suite(rng, 1 / 1.10, 0.01)
    r = cmp.compare(base, new, cmp.Thresholds(5.0))
    assert verdicts(r) == {"IMPROVEMENT": len(NAMES)}
    assert not r.regressed and r.suite.verdict == "IMPROVEMENT"


def test_noisy_small_shift_is_inconclusive_not_ok():
    # 4% slower with 8% noise and 5 repetitions: neither "regression" nor "fine" is supported.
    rng = np.random.default_rng(5)
    base, new = suite(rng, 1.04, 0.08, n=5)
    r = cmp.compare(base, new, cmp.Thresholds(5.0))
    assert not r.regressed
    assert verdicts(r).get("INCONCLUSIVE", 0) >= 6


def lognormal_with_spikes(rng, n):
    x = np.exp(rng.normal(0, 0.03, n))
    spikes = rng.random(n) < 0.1
    return np.where(spikes, x * rng.uniform(1.5, 3.0, n), x)


def student_t(rng, n):
    return np.clip(1.0 + 0.02 * rng.standard_t(2, n), 0.5, None)


@pytest.mark.parametrize("noise", [lognormal_with_spikes, student_t], ids=["lognormal+spikes", "student-t2"])
def test_heavy_tailed_noise_does_not_trip_the_gate(noise):
    rng = np.random.default_rng(6)
    alarms = 0
    for _ in range(50):
        base, new = suite(rng, 1.0, noise=noise)
        alarms += cmp.compare(base, new, cmp.Thresholds(5.0)).regressed
    assert alarms <= 1


def test_single_outliers_do_not_trip_the_gate():
    rng = np.random.default_rng(7)
    for where in ("new", "base", "both"):
        base, new = suite(rng, 1.0, 0.01)
        for name in NAMES:
            if where in ("new", "both"):
                new.times[name][int(rng.integers(10))] *= 5.0   # one repetition 5x slower
            if where in ("base", "both"):
                base.times[name][int(rng.integers(10))] *= 0.5  # one suspiciously fast one
        r = cmp.compare(base, new, cmp.Thresholds(5.0))
        assert not r.regressed, where
        for row in r.rows:
            assert abs(row.ratio - 1) < 0.03


def test_per_benchmark_thresholds_first_match_wins(tmp_path):
    path = tmp_path / "thr.json"
    path.write_text('{"/simd/": 20, "/sq:128/": 15}')
    t = cmp.Thresholds.from_file(5.0, str(path))
    assert t.for_name(bench_name("simd", seq=128)) == 20
    assert t.for_name(bench_name("flash", seq=128)) == 15
    assert t.for_name(bench_name("flash", seq=512)) == 5
    rng = np.random.default_rng(8)
    base, new = suite(rng, 1.10, 0.01)
    r = cmp.compare(base, new, t)
    for row in r.rows:
        expected = "REGRESSION" if "/flash/" in row.name and "/sq:512/" in row.name else "OK"
        assert row.verdict == expected, row.name


def test_structured_thresholds_set_default_and_suite(tmp_path):
    path = tmp_path / "thr.json"
    path.write_text('{"comment": "why", "default": 12, "suite": 7, "patterns": {"/simd/": 20}}')
    t = cmp.Thresholds.from_file(5.0, str(path))
    assert (t.default, t.suite) == (12, 7)
    assert t.for_name(bench_name("simd")) == 20 and t.for_name(bench_name("flash")) == 12
    rng = np.random.default_rng(9)
    base, new = suite(rng, 1.10, 0.01)  # +10% everywhere: below every benchmark's threshold, above the suite's
    r = cmp.compare(base, new, t)
    assert not any(row.verdict == "REGRESSION" for row in r.rows)
    assert r.suite.threshold == 7 and r.suite.verdict == "REGRESSION"
    path.write_text('{"patterns": {}}')
    t = cmp.Thresholds.from_file(5.0, str(path))
    assert (t.default, t.suite, t.patterns) == (5.0, 5.0, [])


@pytest.mark.parametrize("content, message", [
    ('{"patterns": {}, "defualt": 5}', "unknown key"),
    ('{"patterns": {}, "suite": 0}', "positive percentage"),
    ('{"patterns": {}, "default": true}', "positive percentage"),
    ('{"patterns": {"x": -2}}', "positive percentage"),
])
def test_bad_structured_thresholds(tmp_path, content, message):
    path = tmp_path / "thr.json"
    path.write_text(content)
    with pytest.raises(InputError, match=message):
        cmp.Thresholds.from_file(5.0, str(path))


def test_judge_rules():
    # ratio, CI, Holm p(slower), Holm p(faster), threshold %, alpha
    assert cmp.judge(1.08, 1.06, 1.10, 0.01, 1.0, 5, 0.05) == "REGRESSION"
    assert cmp.judge(1.08, 1.06, 1.10, 0.20, 1.0, 5, 0.05) == "INCONCLUSIVE"   # not significant
    assert cmp.judge(1.04, 1.02, 1.06, 0.01, 1.0, 5, 0.05) == "INCONCLUSIVE"   # significant, below T
    assert cmp.judge(1.03, 1.01, 1.049, 0.01, 1.0, 5, 0.05) == "OK"            # CI excludes T
    assert cmp.judge(0.90, 0.88, 0.93, 1.0, 0.01, 5, 0.05) == "IMPROVEMENT"
    assert cmp.judge(0.97, 0.95, 0.99, 1.0, 0.01, 5, 0.05) == "OK"             # faster, but < T
    # Both estimates must pass the threshold: bimodal repetitions can put the Hodges-Lehmann
    # ratio at +8% while the medians moved 2% (seen in a real A/A pair on a busy VM).
    assert cmp.judge(1.08, 1.01, 1.15, 0.03, 1.0, 5, 0.05, median_ratio=1.02) == "INCONCLUSIVE"
    assert cmp.judge(1.08, 1.01, 1.15, 0.03, 1.0, 5, 0.05, median_ratio=1.09) == "REGRESSION"
    assert cmp.judge(0.90, 0.85, 0.99, 1.0, 0.03, 5, 0.05, median_ratio=0.98) == "OK"
