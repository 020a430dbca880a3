"""Uncertainty and paired comparisons for leaderboards: pure functions of stored test accuracies.

The unit of replication is the training set (protocol.md aggregates per-training-set means), so
every interval and test here treats training sets as the independent units and the networks found
on one training set as a second, nested level:

- hierarchical bootstrap: resample training sets with replacement, then networks within each drawn
  training set; the statistic is the protocol's mean over training sets of per-set mean accuracy.
- paired difference (gain over a baseline, optimizer A vs B): the same drawn training sets for both
  sides, networks resampled independently on each side.
- sign-flip permutation test on per-training-set mean differences: exact (all 2^n flips) for up to
  `EXACT_SIGN_FLIP_LIMIT` training sets, Monte Carlo beyond. With n training sets the smallest
  two-sided p-value is 2 / 2^n, so 4 training sets can never reach p < 0.125: an honest limit of
  the design, not of the test.
- Holm's step-down correction across the comparisons of one leaderboard.
- probability of improvement: P(a random network of A beats a random one of B on the same
  training set), ties counted half, averaged over the shared training sets.

Everything is numpy, seeded and vectorised, so a leaderboard of a few hundred networks takes
milliseconds and the same database always yields the same intervals. Each statistic draws from its
own generator, derived from (seed, what is estimated), so adding a row never moves another row's
interval. The exact random stream is part of the contract (`hierarchical_means` documents it) so
a test can recompute every interval independently.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

EXACT_SIGN_FLIP_LIMIT = 16  # 2^16 sign patterns: exact and still instant
TaskKey = tuple  # (dataset, classes, n_train, architecture)
Sets = Mapping[int, np.ndarray]  # training-set seed -> test accuracies of its networks

TASK_KEYS = ("dataset", "classes", "n_train", "architecture")


@dataclass(frozen=True)
class BootstrapSettings:
    """How intervals are drawn; stored beside the results so a figure can be reproduced."""

    resamples: int = 2000
    confidence: float = 0.95
    seed: int = 0
    monte_carlo_permutations: int = 20000

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "method": "hierarchical percentile bootstrap (training sets, then networks)",
        }


# ---------------------------------------------------------------------------------------------
# Grouping stored rows


def group_test_accuracies(network_rows: Iterable[Mapping]) -> dict[tuple, dict[int, np.ndarray]]:
    """(dataset, classes, n_train, architecture, optimizer) -> training-set seed -> accuracies.

    Accuracies keep the stored model_index order (the rows of `network_rows` are sorted by cell and
    model index), which fixes the bootstrap's stream.
    """
    collected: dict[tuple, dict[int, list[tuple[int, float]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for row in network_rows:
        key = tuple(row[k] for k in TASK_KEYS) + (row["optimizer"],)
        collected[key][int(row["training_set_seed"])].append(
            (int(row["model_index"]), float(row["test_acc"]))
        )
    return {
        key: {
            seed: np.array([acc for _, acc in sorted(pairs)])
            for seed, pairs in sorted(sets.items())
        }
        for key, sets in collected.items()
    }


def generator(settings: BootstrapSettings, *identity: Any) -> np.random.Generator:
    """A generator seeded by (settings.seed, sha256 of the identity), stable across runs and rows."""
    text = "|".join(str(part) for part in identity)
    digest = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
    return np.random.default_rng([settings.seed, digest])


def shared_seeds(a: Sets, b: Sets) -> list[int]:
    """Training sets on which both sides have networks, in ascending seed order."""
    return sorted(s for s in a if s in b and len(a[s]) and len(b[s]))


def nonempty_seeds(sets: Sets) -> list[int]:
    return sorted(s for s in sets if len(sets[s]))


# ---------------------------------------------------------------------------------------------
# Hierarchical bootstrap


def hierarchical_means(
    sides: Sequence[Sequence[np.ndarray]], resamples: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Bootstrap replicates of the mean over training sets of per-set mean accuracy, per side.

    `sides[k][j]` are side k's accuracies on training set j (the same j means the same training
    set on every side). The stream, exactly:
      picks = rng.integers(0, S, size=(resamples, S))             # training sets drawn
      for j in 0..S-1, for each side k in order:
          draws = rng.integers(0, n_kj, size=(count of picks == j, n_kj), dtype=np.int32)
          set_means_k[picks == j] = values_kj[draws].mean(axis=1)  # row-major order
      replicate_k = set_means_k.mean(axis=1)
    """
    count = len(sides[0])
    if count == 0 or any(len(side) != count for side in sides):
        raise ValueError("every side needs the same, non-zero number of training sets")
    picks = rng.integers(0, count, size=(resamples, count))
    set_means = [np.empty((resamples, count)) for _ in sides]
    for j in range(count):
        where = picks == j
        drawn = int(where.sum())
        for k, side in enumerate(sides):
            values = np.asarray(side[j], dtype=float)
            draws = rng.integers(0, len(values), size=(drawn, len(values)), dtype=np.int32)
            set_means[k][where] = values[draws].mean(axis=1)
    return [means.mean(axis=1) for means in set_means]


def percentile_interval(replicates: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = 1 - confidence
    low, high = np.quantile(replicates, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def mean_interval(
    sets: Sets, settings: BootstrapSettings, identity: Sequence[Any]
) -> tuple[float, float] | None:
    """Interval for the protocol's mean test accuracy (fraction) of one optimizer on one task."""
    seeds = nonempty_seeds(sets)
    if not seeds:
        return None
    rng = generator(settings, "mean", *identity)
    (replicates,) = hierarchical_means([[sets[s] for s in seeds]], settings.resamples, rng)
    return percentile_interval(replicates, settings.confidence)


def difference_interval(
    a: Sets, b: Sets, settings: BootstrapSettings, identity: Sequence[Any]
) -> tuple[float, float] | None:
    """Interval for mean(A) - mean(B) in percentage points, paired over shared training sets."""
    seeds = shared_seeds(a, b)
    if not seeds:
        return None
    rng = generator(settings, "difference", *identity)
    rep_a, rep_b = hierarchical_means(
        [[a[s] for s in seeds], [b[s] for s in seeds]], settings.resamples, rng
    )
    low, high = percentile_interval(100 * (rep_a - rep_b), settings.confidence)
    return low, high


# ---------------------------------------------------------------------------------------------
# Paired tests


def per_set_differences(a: Sets, b: Sets) -> np.ndarray:
    """Per-training-set mean(A) - mean(B) over the shared training sets (fractions)."""
    return np.array([float(np.mean(a[s]) - np.mean(b[s])) for s in shared_seeds(a, b)])


def sign_flip_test(
    differences: Sequence[float], rng: np.random.Generator | None = None, monte_carlo: int = 20000
) -> tuple[float | None, str]:
    """Two-sided paired permutation test of mean difference 0; returns (p-value, method).

    Under the null each training set's difference is as likely negative as positive. Exact when
    there are at most EXACT_SIGN_FLIP_LIMIT training sets (p = share of the 2^n flips whose |mean|
    reaches the observed one); otherwise Monte Carlo with p = (1 + hits) / (1 + draws).
    """
    d = np.asarray(differences, dtype=float)
    n = len(d)
    if n == 0:
        return None, "none"
    observed = abs(d.sum())
    tolerance = 1e-12 * max(1.0, float(np.abs(d).sum()))
    if n <= EXACT_SIGN_FLIP_LIMIT:
        patterns = np.arange(2**n)[:, None] >> np.arange(n)[None, :] & 1
        sums = np.abs((1 - 2 * patterns) @ d)
        return float(np.mean(sums >= observed - tolerance)), "exact sign-flip"
    rng = rng if rng is not None else np.random.default_rng(0)
    signs = 1 - 2 * rng.integers(0, 2, size=(monte_carlo, n))
    hits = int(np.sum(np.abs(signs @ d) >= observed - tolerance))
    return (1 + hits) / (1 + monte_carlo), f"Monte Carlo sign-flip ({monte_carlo} draws)"


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment (controls the family-wise error rate); None stays None."""
    present = [(p, i) for i, p in enumerate(p_values) if p is not None]
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    m = len(present)
    for rank, (p, i) in enumerate(sorted(present)):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


# ---------------------------------------------------------------------------------------------
# Probability of improvement and percentile in the baseline


def probability_of_improvement(a: Sets, b: Sets) -> float | None:
    """P(random network of A has higher test accuracy than one of B, same training set), ties half.

    Computed per shared training set (a Mann-Whitney U / (n_a n_b)) and averaged over them, so
    each training set weighs the same, as in the protocol's mean. Times 100, it is also the mean
    percentile of A's networks in B's distribution (`baseline_percentile` when B is the baseline).
    """
    shares = improvement_shares(a, b)
    return float(np.mean(list(shares.values()))) if shares else None


def improvement_shares(a: Sets, b: Sets) -> dict[int, float]:
    """Per shared training set, P(random network of A beats one of B), ties half: the units that
    probability_of_improvement averages (and that an across-task bootstrap resamples)."""
    shares = {}
    for s in shared_seeds(a, b):
        reference = np.sort(np.asarray(b[s], dtype=float))
        values = np.asarray(a[s], dtype=float)
        below = np.searchsorted(reference, values, side="left")
        at_or_below = np.searchsorted(reference, values, side="right")
        shares[s] = float(np.mean((below + at_or_below) / 2) / len(reference))
    return shares


# ---------------------------------------------------------------------------------------------
# Comparison of two sides on one task


def compare_sets(
    a: Sets, b: Sets, settings: BootstrapSettings, identity: Sequence[Any]
) -> dict[str, Any]:
    """Everything a paired comparison reports: difference with interval, test, P(improvement)."""
    seeds = shared_seeds(a, b)
    differences = per_set_differences(a, b)
    p_value, method = sign_flip_test(
        differences, generator(settings, "sign-flip", *identity), settings.monte_carlo_permutations
    )
    interval = difference_interval(a, b, settings, identity)
    return {
        "training_sets": len(seeds),
        "difference_pp": 100 * float(differences.mean()) if len(differences) else None,
        "difference_ci_low": interval[0] if interval else None,
        "difference_ci_high": interval[1] if interval else None,
        "p_value": p_value,
        "test": method,
        "prob_improvement": probability_of_improvement(a, b),
    }


# ---------------------------------------------------------------------------------------------
# Aggregation across tasks


def _ranks_descending(values: Sequence[float]) -> list[float]:
    """Rank 1 = highest; tied values share the mean of their ranks."""
    order = sorted(range(len(values)), key=lambda i: -values[i])
    ranks = [0.0] * len(values)
    position = 0
    while position < len(order):
        end = position
        while end + 1 < len(order) and values[order[end + 1]] == values[order[position]]:
            end += 1
        for k in range(position, end + 1):
            ranks[order[k]] = (position + end) / 2 + 1
        position = end + 1
    return ranks


def task_scores(rows: Iterable[Mapping]) -> dict[tuple, dict[str, float]]:
    """task -> optimizer (and baseline) label -> mean test accuracy, from leaderboard rows."""
    scores: dict[tuple, dict[str, float]] = defaultdict(dict)
    for row in rows:
        if row.get("test_acc_mean") is None:
            continue
        task = (row["dataset"], tuple(row["classes"]), row["n_train"], row["architecture"])
        scores[task][row["optimizer"]] = row["test_acc_mean"]
    return dict(scores)


def mean_ranks(rows: Iterable[Mapping]) -> list[dict[str, Any]]:
    """Each optimizer's rank by mean test accuracy on every task it ran, averaged (1 = best)."""
    ranks: dict[str, list[float]] = defaultdict(list)
    for scores in task_scores(rows).values():
        labels = sorted(scores)
        for label, rank in zip(labels, _ranks_descending([scores[l] for l in labels])):
            ranks[label].append(rank)
    table = [
        {"optimizer": label, "mean_rank": float(np.mean(values)), "tasks": len(values),
         "first_places": sum(1 for r in values if r == 1.0)}
        for label, values in ranks.items()
    ]  # fmt: skip
    return sorted(table, key=lambda r: (r["mean_rank"], r["optimizer"]))


def win_rates(rows: Iterable[Mapping]) -> dict[str, Any]:
    """matrix[i][j]: share of the tasks both ran on which optimizer i beat j (ties half)."""
    rows = list(rows)
    scores = task_scores(rows)
    labels = [r["optimizer"] for r in mean_ranks(rows)]
    matrix: list[list[float | None]] = []
    shared: list[list[int]] = []
    for a in labels:
        line, counts = [], []
        for b in labels:
            both = [s for s in scores.values() if a in s and b in s]
            if a == b or not both:
                line.append(None)
            else:
                line.append(
                    sum(1.0 if s[a] > s[b] else 0.5 if s[a] == s[b] else 0.0 for s in both)
                    / len(both)
                )
            counts.append(len(both))
        matrix.append(line)
        shared.append(counts)
    return {"optimizers": labels, "matrix": matrix, "tasks": shared}


def finite_or_none(value: float | None) -> float | None:
    """JSON has no NaN: a statistic that cannot be computed is null."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return value


def gelman_rubin(chains: Sequence[Sequence[float]]) -> float | None:
    """Potential scale reduction R-hat of one quantity over independent chains (Gelman & Rubin
    1992): sqrt of the pooled over the within-chain variance; near 1 when the chains agree.
    Chains are cut to the shortest; None with fewer than two chains of two or more values."""
    usable = [np.asarray(c, dtype=np.float64) for c in chains if len(c) > 1]
    if len(usable) < 2:
        return None
    n = min(len(c) for c in usable)
    values = np.stack([c[:n] for c in usable])
    within = float(values.var(axis=1, ddof=1).mean())
    between = n * float(values.mean(axis=1).var(ddof=1))
    if within == 0.0:
        return 1.0 if between == 0.0 else math.inf
    return math.sqrt(((n - 1) / n * within + between / n) / within)


def repeat_ess(chains: Sequence[Sequence[float]]) -> float | None:
    """Effective number of independent values behind a quantity drawn in independent repeats
    (batch means with the repeats as batches): per repeat W / V, W the pooled within-repeat
    variance and V the sample variance of the repeat means, capped at the repeat's length; summed
    over the repeats. Honest whatever the correlation inside a repeat, because the repeats
    themselves are independent; noisy with few repeats (V has repeats - 1 degrees of freedom).
    Chains are cut to the shortest, as in gelman_rubin; None with fewer than two usable chains."""
    usable = [np.asarray(c, dtype=np.float64) for c in chains if len(c) > 1]
    if len(usable) < 2:
        return None
    n = min(len(c) for c in usable)
    values = np.stack([c[:n] for c in usable])
    within = float(values.var(axis=1, ddof=1).mean())
    between = float(values.mean(axis=1).var(ddof=1))
    per_repeat = float(n) if between == 0.0 else min(float(n), within / between)
    return len(usable) * per_repeat


def chain_agreement(values: Sequence[float], chains: Sequence) -> dict[str, float]:
    """R-hat and the repeat ESS of per-network values grouped by chain ({} without chains)."""
    by_chain: dict[Any, list[float]] = {}
    for value, chain in zip(values, chains):
        if chain is not None:
            by_chain.setdefault(chain, []).append(float(value))
    out = {}
    rhat = gelman_rubin(list(by_chain.values()))
    ess = repeat_ess(list(by_chain.values()))
    if rhat is not None:
        out["rhat_test_acc"] = rhat
    if ess is not None:
        out["ess_test_acc"] = ess
    return out
