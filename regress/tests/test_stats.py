"""The statistics against hand-computed cases and brute force."""
import itertools
import math
from statistics import NormalDist

import numpy as np
import pytest

from attune_regress import stats


def test_midranks_average_ties():
    assert list(stats.midranks([10, 20, 20, 5, 20])) == [2.0, 4.0, 4.0, 1.0, 4.0]


def test_u_statistic_counts_pairs_and_half_ties():
    assert stats.u_statistic([1, 2, 3], [3, 4, 5]) == 8.5
    assert stats.u_statistic([4, 5, 6], [1, 2, 3]) == 0.0


# Under H0 with n1 = n2 = 3 the 20 equally likely rank sets give U = 0..9 with counts
# 1, 1, 2, 3, 3, 3, 3, 2, 1, 1.
@pytest.mark.parametrize("x, y, u, p_greater, p_less", [
    ([1, 2, 3], [4, 5, 6], 9.0, 1 / 20, 1.0),          # y above every x: only 1 of 20 sets
    ([1, 2, 4], [3, 5, 6], 8.0, 2 / 20, 19 / 20),      # U >= 8: 2 of 20
    ([4, 5, 6], [1, 2, 3], 0.0, 1.0, 1 / 20),
    ([1, 3, 5], [2, 4, 6], 6.0, 7 / 20, 16 / 20),      # U >= 6: 3 + 2 + 1 + 1; U <= 6: 16
])
def test_exact_small_cases_by_hand(x, y, u, p_greater, p_less):
    r = stats.mann_whitney(x, y)
    assert r.method == "exact"
    assert r.u == u
    assert r.p_greater == pytest.approx(p_greater)
    assert r.p_less == pytest.approx(p_less)


def test_exact_with_ties_by_hand():
    # Pooled 1 2 3 3 4 5 -> ranks 1 2 3.5 3.5 5 6; y = {3, 4, 5} has rank sum 14.5 (U 8.5).
    # Of the 20 size-3 subsets only {3.5, 5, 6} (twice, one per tied 3.5) reaches 14.5: p = 2/20.
    r = stats.mann_whitney([1, 2, 3], [3, 4, 5])
    assert r.u == 8.5
    assert r.p_greater == pytest.approx(0.1)


@pytest.mark.parametrize("seed", range(6))
def test_exact_matches_brute_force_enumeration(seed):
    rng = np.random.default_rng(seed)
    n1, n2 = int(rng.integers(2, 7)), int(rng.integers(2, 7))
    pooled = rng.integers(0, 6, n1 + n2).astype(float)  # plenty of ties
    x, y = pooled[:n1], pooled[n1:]
    u_obs = stats.u_statistic(x, y)
    us = []
    for idx in itertools.combinations(range(n1 + n2), n2):
        mask = np.zeros(n1 + n2, bool)
        mask[list(idx)] = True
        us.append(stats.u_statistic(pooled[~mask], pooled[mask]))
    us = np.asarray(us)
    r = stats.mann_whitney(x, y)
    assert r.p_greater == pytest.approx(np.mean(us >= u_obs - 1e-9))
    assert r.p_less == pytest.approx(np.mean(us <= u_obs + 1e-9))


def test_normal_approximation_by_hand():
    # x = 0, 2, ..., 58 and y = 1, 3, ..., 59: y_j beats x_0..x_j, so U = 1 + ... + 30 = 465.
    # mu = 30*30/2 = 450, sigma^2 = 900 * 61 / 12 = 4575; continuity-corrected z = 14.5 / 67.6387.
    x, y = np.arange(0, 60, 2), np.arange(1, 61, 2)
    r = stats.mann_whitney(x, y)
    assert r.method == "normal" and r.u == 465.0
    assert r.p_greater == pytest.approx(1 - NormalDist().cdf(14.5 / math.sqrt(4575)), rel=1e-9)
    assert r.p_greater == pytest.approx(0.41513, abs=1e-4)


def test_normal_approximation_tie_correction_by_hand():
    # x: 20 ones, 20 twos; y: 10 ones, 30 twos. U = 30*20 + 0.5*(10*20 + 30*20) = 1000, mu = 800.
    # Ties: 30 ones and 50 twos, sum(t^3 - t) = 26970 + 124950 = 151920, N(N-1) = 6320,
    # sigma^2 = 40*40/12 * (81 - 151920/6320) = 7594.94; z = 199.5 / 87.149 = 2.2892, p = 0.01103.
    x = np.array([1.0] * 20 + [2.0] * 20)
    y = np.array([1.0] * 10 + [2.0] * 30)
    r = stats.mann_whitney(x, y)
    assert r.method == "normal" and r.u == 1000.0
    var = 1600 / 12 * (81 - 151920 / 6320)
    assert r.p_greater == pytest.approx(1 - NormalDist().cdf(199.5 / math.sqrt(var)), rel=1e-9)
    assert r.p_greater == pytest.approx(0.01103, abs=2e-5)
    # The exact test conditional on these ties: U is set by how many of the 40 y values fall
    # among the 50 twos, a hypergeometric count; U >= 1000 means all 30 or more.
    exact = sum(math.comb(50, k) * math.comb(30, 40 - k) for k in range(30, 41)) / math.comb(80, 40)
    assert stats.mann_whitney(x, y, exact_max_n=200).p_greater == pytest.approx(exact, rel=1e-9)


def test_holm_by_hand():
    # Sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, max(0.06, 0.04*1) = 0.06.
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.9]) == [1.0, 1.0]
    assert stats.holm([0.04]) == [0.04]
    assert stats.holm([]) == []


def test_hodges_lehmann_is_the_median_pairwise_ratio():
    # Ratios y_j / x_i for x = 1, 2, 3 and y = 2x: .67 1 1.33 2 2 2 3 4 6 -> median 2.
    est = stats.hodges_lehmann([1, 2, 3], [2, 4, 6])
    assert est.ratio == pytest.approx(2.0)
    # 3 vs 3 cannot reach 95% coverage (the smallest tail is 1/20 per side): unbounded interval.
    assert (est.ci_low, est.ci_high) == (0.0, math.inf)


def test_hodges_lehmann_interval_uses_the_exact_u_quantile():
    # 10 vs 10: P(U <= 23) <= 0.025 < P(U <= 24), so the interval is [D_(24), D_(77)] of 100.
    rng = np.random.default_rng(3)
    x = np.exp(rng.normal(0, 0.05, 10))
    y = np.exp(rng.normal(0.1, 0.05, 10))
    d = np.sort((np.log(y)[:, None] - np.log(x)[None, :]).ravel())
    est = stats.hodges_lehmann(x, y)
    assert est.ci_low == pytest.approx(math.exp(d[23]))
    assert est.ci_high == pytest.approx(math.exp(d[76]))


def test_hodges_lehmann_interval_coverage():
    rng = np.random.default_rng(11)
    covered = 0
    for _ in range(300):
        x = np.exp(rng.normal(0, 0.03, 10))
        y = 1.1 * np.exp(rng.normal(0, 0.03, 10))
        est = stats.hodges_lehmann(x, y)
        covered += est.ci_low <= 1.1 <= est.ci_high
    assert covered / 300 >= 0.92


def test_normal_interval_index_agrees_with_exact():
    # Just above the exact limit the normal approximation must give the same or a more
    # conservative interval than the exact distribution would.
    for n1, n2 in [(20, 31), (26, 26), (30, 40)]:
        k_normal = stats._u_lower_quantile_count(n1, n2, 0.025)
        dist = stats._rank_sum_distribution(tuple(range(2, 2 * (n1 + n2) + 1, 2)), n2)
        cdf = np.cumsum(dist[n2 * (n2 + 1)::2][:n1 * n2 + 1])
        k_exact = int(np.searchsorted(cdf, 0.025 * (1 + 1e-12), side="right"))
        assert k_exact - 2 <= k_normal <= k_exact


def test_suite_bootstrap_is_deterministic_and_brackets_the_shift():
    rng = np.random.default_rng(5)
    pairs = [(np.exp(rng.normal(0, 0.02, 10)), 1.08 * np.exp(rng.normal(0, 0.02, 10))) for _ in range(6)]
    est, lo, hi = stats.suite_bootstrap(pairs)
    assert (est, lo, hi) == stats.suite_bootstrap(pairs)
    medians = [np.median(n) / np.median(b) for b, n in pairs]
    assert est == pytest.approx(stats.geometric_mean(medians))
    assert 1.0 < lo < 1.08 < hi
