"""Change points in a benchmark's history of medians: robust binary segmentation on log times.

Method (deterministic, no tuning per benchmark):
 1. Work on x = log(median): a step of +10% is the same size anywhere on the time axis.
 2. Noise sigma: the robust spread of first differences, 1.4826 * median(|x[i+1] - x[i]|)
    / sqrt(2) (a step moves only one difference, so it barely affects this estimate).
 3. Binary segmentation: in a segment, take the split that minimises the summed absolute
    deviation of each side from its own median (an L1 cost: one wild run cannot drag the
    split). Accept it only when
      - both sides hold >= min_size runs (default 3),
      - the sides' medians differ by >= min_change (default 5%),
      - >= min_size runs on each side lie on their own side of the midpoint between the two
        medians (two runs at a new level plus one old run are not a level of three), and
      - the step is >= z (default 3.5) standard errors, sigma * sqrt(1/n_left + 1/n_right);
    then segment both sides the same way.
 4. Prune: while two adjacent final segments' medians differ by less than min_change, drop the
    change point between them with the smallest change.
A change point is the index of the first run of the new segment, with the medians of the
segments before and after it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ChangePoint:
    index: int      # first point of the new level
    before: float   # median of the previous segment
    after: float    # median of the next segment

    @property
    def change(self) -> float:
        return self.after / self.before - 1.0


def noise_sigma(x: np.ndarray) -> float:
    if len(x) < 3:
        return 0.0
    return float(1.4826 * np.median(np.abs(np.diff(x))) / math.sqrt(2.0))


def _best_split(x: np.ndarray, min_size: int):
    """Index k minimising the L1 cost of x[:k] and x[k:] around their medians, or None."""
    n = len(x)
    if n < 2 * min_size:
        return None
    best = None
    for k in range(min_size, n - min_size + 1):
        left, right = x[:k], x[k:]
        cost = np.abs(left - np.median(left)).sum() + np.abs(right - np.median(right)).sum()
        if best is None or cost < best[1] - 1e-15:
            best = (k, cost)
    return best[0]


def _accept(left: np.ndarray, right: np.ndarray, min_size: int, threshold: float, sigma: float, z: float) -> bool:
    ml, mr = float(np.median(left)), float(np.median(right))
    step = mr - ml
    if abs(step) < threshold:
        return False
    mid = 0.5 * (ml + mr)
    sign = 1.0 if step > 0 else -1.0
    if np.sum(sign * (left - mid) < 0) < min_size or np.sum(sign * (right - mid) > 0) < min_size:
        return False
    return abs(step) >= z * sigma * math.sqrt(1.0 / len(left) + 1.0 / len(right))


def detect(values, min_size: int = 3, min_change: float = 0.05, z: float = 3.5) -> list:
    v = np.asarray(values, dtype=float)
    if len(v) < 2 * min_size or np.any(~np.isfinite(v)) or np.any(v <= 0):
        return []
    x = np.log(v)
    n = len(x)
    sigma = noise_sigma(x)
    threshold = math.log1p(min_change)
    cuts = []
    stack = [(0, n)]
    while stack:
        a, b = stack.pop()
        k = _best_split(x[a:b], min_size)
        if k is None:
            continue
        if _accept(x[a:a + k], x[a + k:b], min_size, threshold, sigma, z):
            cuts.append(a + k)
            stack.append((a, a + k))
            stack.append((a + k, b))
    cuts.sort()
    while cuts:
        bounds = [0] + cuts + [n]
        medians = [np.median(x[bounds[i]:bounds[i + 1]]) for i in range(len(bounds) - 1)]
        steps = [abs(medians[i + 1] - medians[i]) for i in range(len(cuts))]
        i = int(np.argmin(steps))
        if steps[i] >= threshold:
            break
        del cuts[i]
    bounds = [0] + cuts + [n]
    medians = [math.exp(np.median(x[bounds[i]:bounds[i + 1]])) for i in range(len(bounds) - 1)]
    return [ChangePoint(c, medians[i], medians[i + 1]) for i, c in enumerate(cuts)]
