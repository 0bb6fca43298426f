"""Statistics for the regression gate: Mann-Whitney U, Hodges-Lehmann shift with its
rank-based (Moses) interval, Holm's step-down correction, and a seeded bootstrap of the
suite's geometric-mean ratio of medians. Standard library + numpy only.

All ratio statistics work on log times, so "new is 10% slower" and "new is 1/1.1 as fast"
are symmetric, and the estimate of new/base is the median of all pairwise ratios
new_j / base_i (the Hodges-Lehmann estimator of the log shift, exponentiated).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist

import numpy as np

# Exact null distribution (conditional on ties) up to this many pooled samples; the normal
# approximation with tie and continuity correction beyond.
EXACT_MAX_N = 50
_NORMAL = NormalDist()


def midranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given the mean of the ranks they span."""
    values = np.asarray(values, dtype=float)
    order = np.argsort(values, kind="mergesort")
    sorted_v = values[order]
    ranks = np.empty(len(values), dtype=float)
    i = 0
    n = len(values)
    while i < n:
        j = i
        while j + 1 < n and sorted_v[j + 1] == sorted_v[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def u_statistic(x, y) -> float:
    """U of sample y against x: #pairs with y_j > x_i plus half the ties. Large = y larger."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    d = y[:, None] - x[None, :]
    return float(np.sum(d > 0) + 0.5 * np.sum(d == 0))


@lru_cache(maxsize=256)
def _rank_sum_distribution(scores: tuple[int, ...], n2: int) -> np.ndarray:
    """counts[s] = number of size-n2 subsets of `scores` (integers, here 2 x midranks) whose
    sum is s, divided by the number of subsets: the exact permutation null distribution of
    (twice) the rank sum of y, conditional on the observed ties."""
    total = sum(sorted(scores)[-n2:]) if n2 else 0
    ways = np.zeros((n2 + 1, total + 1), dtype=float)
    ways[0, 0] = 1.0
    for i, s in enumerate(scores):
        for k in range(min(i + 1, n2), 0, -1):
            if s <= total:
                ways[k, s:] += ways[k - 1, :total + 1 - s]
    dist = ways[n2]
    return dist / dist.sum()


@dataclass(frozen=True)
class MannWhitney:
    u: float          # U of the new sample (y) against the baseline (x)
    p_greater: float  # one-sided: y tends to be larger (new is slower)
    p_less: float     # one-sided: y tends to be smaller (new is faster)
    method: str       # "exact" or "normal"


def mann_whitney(x, y, exact_max_n: int = EXACT_MAX_N) -> MannWhitney:
    """One-sided Mann-Whitney U tests of y against x, both directions.

    Exact (the permutation distribution of the rank sum, conditional on ties) when
    n1 + n2 <= exact_max_n; otherwise the normal approximation with the tie-corrected
    variance and a continuity correction of 1/2.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    n1, n2 = len(x), len(y)
    if n1 < 1 or n2 < 1:
        raise ValueError("both samples need at least one value")
    pooled = np.concatenate([x, y])
    ranks = midranks(pooled)
    r2 = float(ranks[n1:].sum())
    u = r2 - n2 * (n2 + 1) / 2.0
    n = n1 + n2
    if n <= exact_max_n:
        scores = tuple(int(round(2 * r)) for r in sorted(ranks))
        dist = _rank_sum_distribution(scores, n2)
        obs = int(round(2 * r2))
        p_greater = float(dist[obs:].sum())
        p_less = float(dist[:obs + 1].sum())
        return MannWhitney(u, min(1.0, p_greater), min(1.0, p_less), "exact")
    mu = n1 * n2 / 2.0
    _, counts = np.unique(pooled, return_counts=True)
    tie_term = float(np.sum(counts ** 3 - counts)) / (n * (n - 1))
    var = n1 * n2 / 12.0 * ((n + 1) - tie_term)
    if var <= 0:  # every value identical
        return MannWhitney(u, 1.0, 1.0, "normal")
    sd = math.sqrt(var)
    p_greater = 1.0 - _NORMAL.cdf((u - mu - 0.5) / sd)
    p_less = _NORMAL.cdf((u - mu + 0.5) / sd)
    return MannWhitney(u, min(1.0, p_greater), min(1.0, p_less), "normal")


@lru_cache(maxsize=256)
def _u_lower_quantile_count(n1: int, n2: int, tail: float) -> int:
    """Largest k with P(U <= k - 1) <= tail under H0 without ties (k = 0: none)."""
    if n1 + n2 <= EXACT_MAX_N:
        dist = _rank_sum_distribution(tuple(range(2, 2 * (n1 + n2) + 1, 2)), n2)
        # 2 x rank sum runs from n2(n2+1) in steps of 2; U = rank sum - n2(n2+1)/2.
        offset = n2 * (n2 + 1)
        u_probs = dist[offset::2][:n1 * n2 + 1]
        cdf = np.cumsum(u_probs)
        k = int(np.searchsorted(cdf, tail * (1 + 1e-12), side="right"))
        return k
    mu = n1 * n2 / 2.0
    sd = math.sqrt(n1 * n2 * (n1 + n2 + 1) / 12.0)
    z = _NORMAL.inv_cdf(1.0 - tail)
    return max(0, int(math.floor(mu - z * sd + 0.5)))


@dataclass(frozen=True)
class ShiftEstimate:
    ratio: float     # Hodges-Lehmann estimate of new/base (median of pairwise ratios)
    ci_low: float    # rank-based (Moses) interval of the ratio; -inf/inf sides become 0/inf
    ci_high: float
    level: float     # nominal two-sided coverage, e.g. 0.95


def hodges_lehmann(x, y, level: float = 0.95) -> ShiftEstimate:
    """Ratio new/base from positive times x (base) and y (new), on the log scale.

    The estimate is the median of the n1 x n2 differences log y_j - log x_i; the interval
    [D_(k), D_(n1 n2 + 1 - k)] of the sorted differences, with k from the null distribution of
    U, covers the true shift with probability >= level (exactly distribution-free under the
    shift model). With too few samples for that coverage the interval is (0, inf).
    """
    lx = np.log(np.asarray(x, dtype=float))
    ly = np.log(np.asarray(y, dtype=float))
    d = np.sort((ly[:, None] - lx[None, :]).ravel())
    ratio = float(math.exp(np.median(d)))
    k = _u_lower_quantile_count(len(lx), len(ly), (1.0 - level) / 2.0)
    if k < 1:
        return ShiftEstimate(ratio, 0.0, math.inf, level)
    m = len(d)
    return ShiftEstimate(ratio, float(math.exp(d[k - 1])), float(math.exp(d[m - k])), level)


def holm(pvalues) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given); controls the family-wise
    error rate at alpha when each adjusted p is compared with alpha."""
    p = [float(v) for v in pvalues]
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def geometric_mean(values) -> float:
    v = np.asarray(values, dtype=float)
    return float(math.exp(np.mean(np.log(v))))


def suite_bootstrap(pairs, level: float = 0.95, resamples: int = 2000, seed: int = 20240508, weights=None,
                    statistic=np.median):
    """The suite's geometric-mean ratio and its percentile bootstrap interval.

    pairs: list of (base_times, new_times). The statistic is the geometric mean over benchmarks
    of median(new) / median(base), weighted by `weights` (one per pair, normalised here; a
    calibration gives quiet benchmarks more weight) or equally. `statistic` (np.median, or np.min
    for the best-case times of a calibrated duet) replaces the medians throughout. Each resample draws the repetitions of every benchmark with
    replacement (base and new independently) and recomputes it. Fixed seed: the same input
    always gives the same interval. Returns (estimate, low, high).
    """
    rng = np.random.default_rng(seed)
    total = np.zeros(resamples)
    point = 0.0
    w = np.ones(len(pairs)) if weights is None else np.asarray(weights, dtype=float)
    if len(w) != len(pairs) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError("suite weights must be one finite non-negative value per benchmark, not all zero")
    w = w / w.sum()
    for (base, new), wb in zip(pairs, w):
        lx = np.log(np.asarray(base, dtype=float))
        ly = np.log(np.asarray(new, dtype=float))
        point += wb * (statistic(ly) - statistic(lx))
        ix = rng.integers(0, len(lx), size=(resamples, len(lx)))
        iy = rng.integers(0, len(ly), size=(resamples, len(ly)))
        total += wb * (statistic(ly[iy], axis=1) - statistic(lx[ix], axis=1))
    g = np.exp(total)
    tail = (1.0 - level) / 2.0
    return float(math.exp(point)), float(np.quantile(g, tail)), float(np.quantile(g, 1.0 - tail))
