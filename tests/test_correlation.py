"""The statistics of `benchsuite explain`, validated before they are shown: Spearman's rho against
scipy's, the vectorized bootstrap against resampling done by hand and scipy, and the interval's
coverage on synthetic data whose rank correlation is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchsuite.correlation import average_ranks, bootstrap_spearman, spearman, spearman_interval

scipy_stats = pytest.importorskip("scipy.stats")


def test_average_ranks_equal_scipys_rankdata():
    rng = np.random.default_rng(0)
    for _ in range(50):
        x = rng.integers(0, 5, size=rng.integers(1, 30)).astype(float)
        np.testing.assert_array_equal(average_ranks(x), scipy_stats.rankdata(x))


def test_spearman_equals_scipy_with_and_without_ties():
    rng = np.random.default_rng(1)
    for trial in range(300):
        n = int(rng.integers(3, 60))
        x = rng.normal(size=n) if trial % 2 else rng.integers(0, 6, size=n).astype(float)
        y = x + rng.normal(size=n) if trial % 3 else rng.integers(0, 3, size=n).astype(float)
        expected = scipy_stats.spearmanr(x, y).statistic
        got = spearman(x, y)
        if math.isnan(expected):
            assert got is None
        else:
            assert got == pytest.approx(expected, abs=1e-12)
    assert spearman([1, 2], [2, 1]) is None and spearman([1, 1, 1], [1, 2, 3]) is None


def test_each_bootstrap_replicate_equals_resampling_by_hand():
    """The multinomial counts drawn by the documented stream, expanded into an explicit resample
    and given to scipy.stats.spearmanr, give every replicate (ties in the data included)."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=25)
    x[:6] = 0.0  # ties
    y = np.round(x + rng.normal(size=25), 1)
    replicates = bootstrap_spearman(x, y, 200, np.random.default_rng(7), per_call=64)
    counts = np.random.default_rng(7).multinomial(25, np.full(25, 1 / 25), size=200)
    for replicate, count in zip(replicates, counts):
        chosen = np.repeat(np.arange(25), count)
        expected = scipy_stats.spearmanr(x[chosen], y[chosen]).statistic
        assert replicate == pytest.approx(expected, abs=1e-10) if not math.isnan(expected) else math.isnan(replicate)


def population_spearman(rho: float) -> float:
    """Spearman's rho of a bivariate normal with Pearson correlation rho: (6/pi) asin(rho/2)."""
    return 6 / math.pi * math.asin(rho / 2)


def coverage(n: int, rho: float, confidence: float, repeats: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    target = population_spearman(rho)
    hits = 0
    for _ in range(repeats):
        sample = rng.multivariate_normal([0, 0], [[1, rho], [rho, 1]], size=n)
        low, high, _ = spearman_interval(sample[:, 0], sample[:, 1], 500, confidence, rng)
        hits += low <= target <= high
    return hits / repeats


@pytest.mark.parametrize("n,rho", [(25, 0.0), (40, 0.6), (80, 0.3)])
def test_the_interval_covers_a_known_correlation_as_often_as_it_says(n, rho):
    """300 synthetic data sets each (seeded): a 95% interval must cover the true rank correlation
    in 90-99% of them (binomial sd 1.3 points at 95%); a 50% interval about half the time, so a
    test that could not tell 95% from 50% would fail."""
    assert 0.90 <= coverage(n, rho, 0.95, 300, seed=n) <= 0.99
    assert 0.40 <= coverage(n, rho, 0.50, 200, seed=n + 1) <= 0.60


def test_a_constant_side_has_no_correlation_and_no_interval():
    assert spearman_interval([1.0] * 10, list(range(10)), 200, 0.95, np.random.default_rng(0))[:2] == (None, None)
