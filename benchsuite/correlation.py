"""Rank correlation with a bootstrap interval: which diagnostic tracks the gain (`benchsuite explain`).

- Spearman's rho: Pearson's correlation of the ranks, ties given their average rank (as
  scipy.stats.spearmanr; tests/test_correlation.py checks them equal).
- bootstrap: the pairs (x_i, y_i) resampled with replacement. A resample that holds pair i c_i
  times is the data weighted by c_i, so each replicate is computed from multinomial counts without
  copying data: average ranks under weights (the c_j of the values below x_i, plus half of the
  c_j - 1 of its ties' other copies, plus 1, as average ranks do) and a weighted Pearson
  correlation. The stream: counts = rng.multinomial(n, [1/n] * n, size=resamples).
- interval: the percentile interval of the replicates; a replicate whose x or y is constant has
  no correlation and is left out (their number is reported). tests/test_correlation.py checks its
  coverage on synthetic data with a known correlation.

numpy only: reading results loads no torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def average_ranks(values: Sequence[float]) -> np.ndarray:
    """Ranks 1..n, ties sharing the mean of their ranks."""
    x = np.asarray(values, dtype=float)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    sorted_x = x[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_x)) + 1]
    ends = np.r_[starts[1:], len(x)]
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = (start + end + 1) / 2
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation; None with fewer than 3 pairs or a constant side."""
    if len(x) != len(y):
        raise ValueError("x and y need the same length")
    if len(x) < 3:
        return None
    rx, ry = average_ranks(x), average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = np.sqrt((rx * rx).sum() * (ry * ry).sum())
    return None if denominator == 0 else float((rx * ry).sum() / denominator)


def weighted_ranks(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Average ranks of every original value inside each resample: [resamples, n].

    With c_j copies of value j in a resample, the copies of value v occupy the positions after
    all copies of smaller values: their average rank is below + (equal + 1) / 2."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    group = np.r_[0, np.cumsum(np.diff(sorted_values) != 0)]  # tie group of each sorted position
    sorted_counts = counts[:, order].astype(float)
    totals = np.zeros((counts.shape[0], group[-1] + 1))
    np.add.at(totals.T, group, sorted_counts.T)
    below = np.cumsum(totals, axis=1) - totals
    group_ranks = below + (totals + 1) / 2
    ranks = np.empty_like(sorted_counts)
    ranks[:, order] = group_ranks[:, group]
    return ranks


def weighted_pearson(a: np.ndarray, b: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Pearson's correlation per row under weights: [resamples]; NaN where a side is constant."""
    total = weights.sum(axis=1, keepdims=True)
    da = a - (weights * a).sum(axis=1, keepdims=True) / total
    db = b - (weights * b).sum(axis=1, keepdims=True) / total
    covariance = (weights * da * db).sum(axis=1)
    variance = (weights * da * da).sum(axis=1) * (weights * db * db).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(variance > 1e-12 * total[:, 0] ** 4, covariance / np.sqrt(variance), np.nan)


def bootstrap_spearman(
    x: Sequence[float], y: Sequence[float], resamples: int, rng: np.random.Generator, per_call: int = 500
) -> np.ndarray:
    """Spearman's rho of `resamples` bootstrap resamples of the pairs (NaN: a constant side)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = len(x)
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=resamples)
    replicates = []
    for start in range(0, resamples, per_call):
        c = counts[start : start + per_call]
        replicates.append(weighted_pearson(weighted_ranks(x, c), weighted_ranks(y, c), c.astype(float)))
    return np.concatenate(replicates)


def spearman_interval(
    x: Sequence[float], y: Sequence[float], resamples: int, confidence: float, rng: np.random.Generator
) -> tuple[float | None, float | None, int]:
    """(low, high, resamples left out) of the percentile bootstrap interval of Spearman's rho."""
    replicates = bootstrap_spearman(x, y, resamples, rng)
    finite = replicates[np.isfinite(replicates)]
    if len(finite) < max(10, resamples // 2):
        return None, None, int(resamples - len(finite))
    alpha = 1 - confidence
    low, high = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high), int(resamples - len(finite))
