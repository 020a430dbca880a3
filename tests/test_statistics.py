"""Every statistic of the leaderboard, recomputed from raw SQL rows with plain Python.

The recomputations below share no code with benchsuite.statistics: the bootstrap is re-run from its
documented random stream with loops, the sign-flip test enumerates patterns with itertools, P(better)
counts pairs one by one. Property tests check the statistics against scipy where it is installed.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import sqlite3
from collections import defaultdict
from pathlib import Path
from statistics import fmean, pstdev

import numpy as np
import pytest
from stored_results import make_results

from benchsuite import statistics as stats
from benchsuite.leaderboard import leaderboard_from_store
from benchsuite.reporting.json_rows import to_json
from benchsuite.statistics import BootstrapSettings
from benchsuite.store import Store


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    # one missing baseline cell: gains must pair over the training sets both sides have
    return make_results(
        tmp_path_factory.mktemp("stats") / "out", skip={((3, 8), 8, "1", "gnc", 203)}
    )


@pytest.fixture(scope="module")
def rows(folder) -> list[dict]:
    with Store(folder / "results.sqlite") as store:
        built = leaderboard_from_store(store)
    return json.loads(to_json(built))  # what leaderboard.json holds


@pytest.fixture(scope="module")
def raw(folder) -> dict[tuple, dict[int, list[float]]]:
    """(dataset, classes, n_train, architecture, optimizer) -> seed -> accuracies in model order."""
    with sqlite3.connect(folder / "results.sqlite") as db:
        records = db.execute(
            "SELECT c.dataset, c.classes, c.n_train, c.architecture, c.optimizer, c.training_set_seed, "
            "n.model_index, n.test_acc FROM networks n JOIN cells c ON c.cell_id = n.cell_id "
            "ORDER BY c.cell_id, n.model_index"
        ).fetchall()
    grouped: dict[tuple, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for dataset, classes, n, arch, opt, seed, _, acc in records:
        grouped[(dataset, classes, n, arch, opt)][seed].append(acc)
    return grouped


def key_of(row: dict) -> tuple:
    return (
        row["dataset"],
        ",".join(map(str, row["classes"])),
        row["n_train"],
        row["architecture"],
        row["optimizer"],
    )


# ---------------------------------------------------------------------------------------------
# Independent recomputations


def loop_generator(seed: int, *identity) -> np.random.Generator:
    digest = int.from_bytes(
        hashlib.sha256("|".join(map(str, identity)).encode()).digest()[:8], "big"
    )
    return np.random.default_rng([seed, digest])


def loop_bootstrap(
    sides: list[list[list[float]]], resamples: int, rng: np.random.Generator
) -> list[list[float]]:
    """The documented stream, with loops: picks, then per training set and side, the draws."""
    count = len(sides[0])
    picks = rng.integers(0, count, size=(resamples, count)).tolist()
    set_means = [[[0.0] * count for _ in range(resamples)] for _ in sides]
    for j in range(count):
        positions = [(b, k) for b in range(resamples) for k in range(count) if picks[b][k] == j]
        for side, means in zip(sides, set_means):
            values = side[j]
            draws = rng.integers(
                0, len(values), size=(len(positions), len(values)), dtype=np.int32
            ).tolist()
            for (b, k), drawn in zip(positions, draws):
                means[b][k] = sum(values[i] for i in drawn) / len(values)
    return [[sum(line) / count for line in means] for means in set_means]


def quantile(values: list[float], q: float) -> float:
    """Linear interpolation between order statistics (numpy's default), written out."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def enumerate_sign_flips(differences: list[float]) -> float:
    observed = abs(sum(differences))
    hits = sum(
        1 for signs in itertools.product((1, -1), repeat=len(differences))
        if abs(sum(s * d for s, d in zip(signs, differences))) >= observed - 1e-12
    )  # fmt: skip
    return hits / 2 ** len(differences)


def pairs_better(a: list[float], b: list[float]) -> float:
    return sum(1.0 if x > y else 0.5 if x == y else 0.0 for x in a for y in b) / (len(a) * len(b))


def holm_by_hand(p_values: list[float]) -> list[float]:
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


# ---------------------------------------------------------------------------------------------
# The leaderboard's numbers from the database


def test_point_estimates_match_raw_rows(rows, raw):
    for row in rows:
        sets = raw[key_of(row)]
        means = {seed: fmean(v) for seed, v in sets.items()}
        assert row["test_acc_mean"] == pytest.approx(fmean(means.values()), abs=1e-12)
        assert row["test_acc_std"] == pytest.approx(pstdev(means.values()), abs=1e-12)
        if row["role"] == "optimizer":
            base = {s: fmean(v) for s, v in raw[key_of(row)[:4] + ("gnc",)].items()}
            shared = sorted(set(means) & set(base))
            assert row["gain_pp"] == pytest.approx(
                100 * fmean(means[s] - base[s] for s in shared), abs=1e-9
            )


def test_mean_intervals_recomputed_with_loops(rows, raw):
    settings = BootstrapSettings()
    checked = 0
    for row in rows[:6]:  # loops are slow; six rows cover baselines and optimizers
        sets = raw[key_of(row)]
        seeds = sorted(sets)
        rng = loop_generator(settings.seed, "mean", *key_of(row))
        (replicates,) = loop_bootstrap([[sets[s] for s in seeds]], settings.resamples, rng)
        assert row["test_acc_ci_low"] == pytest.approx(quantile(replicates, 0.025), abs=1e-12)
        assert row["test_acc_ci_high"] == pytest.approx(quantile(replicates, 0.975), abs=1e-12)
        assert row["test_acc_ci_low"] <= row["test_acc_mean"] <= row["test_acc_ci_high"]
        assert (row["bootstrap_seed"], row["bootstrap_resamples"], row["confidence"]) == (
            0,
            2000,
            0.95,
        )
        checked += 1
    assert checked == 6


def test_gain_intervals_recomputed_with_loops(rows, raw):
    settings = BootstrapSettings()
    optimizer_rows = [r for r in rows if r["role"] == "optimizer"]
    partial = [
        r
        for r in optimizer_rows
        if r["dataset"] == "digits"
        and r["classes"] == [3, 8]
        and r["n_train"] == 8
        and r["architecture"] == "mlp w=1 d=4"
    ]
    for row in optimizer_rows[:3] + partial:
        a, b = raw[key_of(row)], raw[key_of(row)[:4] + ("gnc",)]
        seeds = sorted(set(a) & set(b))
        rng = loop_generator(settings.seed, "difference", *key_of(row), "gnc")
        rep_a, rep_b = loop_bootstrap(
            [[a[s] for s in seeds], [b[s] for s in seeds]], settings.resamples, rng
        )
        gains = [100 * (x - y) for x, y in zip(rep_a, rep_b)]
        assert row["gain_ci_low"] == pytest.approx(quantile(gains, 0.025), abs=1e-9)
        assert row["gain_ci_high"] == pytest.approx(quantile(gains, 0.975), abs=1e-9)
        assert row["gain_ci_low"] <= row["gain_pp"] <= row["gain_ci_high"]
    assert [len(set(raw[key_of(r)]) & set(raw[key_of(r)[:4] + ("gnc",)])) for r in partial] == [
        3,
        3,
    ]


def test_p_values_and_holm_recomputed(rows, raw):
    optimizer_rows = [r for r in rows if r["role"] == "optimizer"]
    expected = []
    for row in optimizer_rows:
        a, b = raw[key_of(row)], raw[key_of(row)[:4] + ("gnc",)]
        differences = [fmean(a[s]) - fmean(b[s]) for s in sorted(set(a) & set(b))]
        expected.append(enumerate_sign_flips(differences))
        assert row["p_value"] == pytest.approx(expected[-1], abs=1e-12)
        assert row["test"] == "exact sign-flip"
    for row, adjusted in zip(optimizer_rows, holm_by_hand(expected)):
        assert row["p_value_holm"] == pytest.approx(adjusted, abs=1e-12)
    assert all(
        r["p_value"] is None and r["p_value_holm"] is None for r in rows if r["role"] == "baseline"
    )


def test_probability_of_improvement_and_percentile_recomputed(rows, raw):
    for row in (r for r in rows if r["role"] == "optimizer"):
        a, b = raw[key_of(row)], raw[key_of(row)[:4] + ("gnc",)]
        shared = sorted(set(a) & set(b))
        assert row["prob_improvement"] == pytest.approx(
            fmean(pairs_better(a[s], b[s]) for s in shared), abs=1e-12
        )
        percentiles = []
        for s in shared:  # where each network falls in the baseline's distribution, ties half
            per_network = [
                100 * (sum(y < x for y in b[s]) + 0.5 * sum(y == x for y in b[s])) / len(b[s])
                for x in a[s]
            ]
            percentiles.append(fmean(per_network))
        assert row["baseline_percentile"] == pytest.approx(fmean(percentiles), abs=1e-9)
        assert 0 <= row["prob_improvement"] <= 1


def test_comparisons_ranks_and_win_rates_recomputed(folder, rows, raw):
    with Store(folder / "results.sqlite") as store:
        built = leaderboard_from_store(store)
    tasks = defaultdict(dict)
    for row in rows:
        tasks[key_of(row)[:4]][row["optimizer"]] = row["test_acc_mean"]
    # mean rank: rank 1 = best on each task, averaged
    ranks = defaultdict(list)
    for scores in tasks.values():
        for label, value in scores.items():
            ranks[label].append(
                1
                + sum(v > value for v in scores.values())
                + 0.5 * (sum(v == value for v in scores.values()) - 1)
            )
    assert {r["optimizer"]: r["mean_rank"] for r in built.ranking} == pytest.approx(
        {k: fmean(v) for k, v in ranks.items()}
    )
    labels = built.win_rates["optimizers"]
    for i, a in enumerate(labels):
        for j, b in enumerate(labels):
            if a != b:
                shared = [s for s in tasks.values() if a in s and b in s]
                expected = fmean(
                    1.0 if s[a] > s[b] else 0.5 if s[a] == s[b] else 0.0 for s in shared
                )
                assert built.win_rates["matrix"][i][j] == pytest.approx(expected)
    # every pair within every task, oriented optimizers first, Holm over the whole table
    assert len(built.comparisons) == len(tasks) * 3
    for c in built.comparisons:
        a = raw[
            (
                c["dataset"],
                ",".join(map(str, c["classes"])),
                c["n_train"],
                c["architecture"],
                c["optimizer_a"],
            )
        ]
        b = raw[
            (
                c["dataset"],
                ",".join(map(str, c["classes"])),
                c["n_train"],
                c["architecture"],
                c["optimizer_b"],
            )
        ]
        shared = sorted(set(a) & set(b))
        differences = [fmean(a[s]) - fmean(b[s]) for s in shared]
        assert c["difference_pp"] == pytest.approx(100 * fmean(differences), abs=1e-9)
        assert c["p_value"] == pytest.approx(enumerate_sign_flips(differences))
        assert c["prob_improvement"] == pytest.approx(
            fmean(pairs_better(a[s], b[s]) for s in shared)
        )
        assert c["optimizer_b"] == "gnc" or c["optimizer_a"] < c["optimizer_b"]
    holm = holm_by_hand([c["p_value"] for c in built.comparisons])
    assert [c["p_value_holm"] for c in built.comparisons] == pytest.approx(holm)
    # the gain interval of a row is the interval of the same pair in the comparisons table
    for row in (r for r in rows if r["role"] == "optimizer"):
        match = next(
            c
            for c in built.comparisons
            if (
                c["dataset"],
                c["classes"],
                c["n_train"],
                c["architecture"],
                c["optimizer_a"],
                c["optimizer_b"],
            )
            == (
                row["dataset"],
                row["classes"],
                row["n_train"],
                row["architecture"],
                row["optimizer"],
                "gnc",
            )
        )
        assert (match["difference_ci_low"], match["difference_ci_high"]) == (
            row["gain_ci_low"],
            row["gain_ci_high"],
        )


# ---------------------------------------------------------------------------------------------
# Reproducibility and speed


def test_same_database_same_intervals_and_rows_independent_of_others(tmp_path, rows):
    again = make_results(tmp_path / "again", skip={((3, 8), 8, "1", "gnc", 203)})
    with Store(again / "results.sqlite") as store:
        assert json.loads(to_json(leaderboard_from_store(store))) == rows
    # fewer tasks in the database: the remaining rows keep their intervals exactly
    smaller = make_results(tmp_path / "smaller", pairs=((0, 1),), skip=set())
    with Store(smaller / "results.sqlite") as store:
        subset = {key_of(r): r for r in leaderboard_from_store(store)}
    for row in rows:
        if key_of(row) in subset and row["classes"] == [0, 1]:
            assert subset[key_of(row)]["test_acc_ci_low"] == row["test_acc_ci_low"]


def test_another_seed_moves_intervals_but_not_estimates(folder, rows):
    with Store(folder / "results.sqlite") as store:
        other = leaderboard_from_store(store, settings=BootstrapSettings(seed=7))
    assert [r["test_acc_mean"] for r in other] == [r["test_acc_mean"] for r in rows]
    assert [r["test_acc_ci_low"] for r in other] != [r["test_acc_ci_low"] for r in rows]
    assert all(r["bootstrap_seed"] == 7 for r in other)


def test_quickstart_sized_leaderboard_has_every_row_and_comparison(tmp_path):
    # quickstart scale: 8 tasks x 3 methods x 2 training sets x 20 networks = 960 networks;
    # its speed is benchmarks/test_bench_leaderboard.py
    folder = make_results(tmp_path / "qs", seeds=(200, 201), models=20)
    with Store(folder / "results.sqlite") as store:
        cells, networks, runs = store.cells(), store.network_rows(), store.runs()
    from benchsuite.leaderboard import build_leaderboard

    built = build_leaderboard(cells, networks, "gnc", runs=runs)
    assert len(built) == 24 and len(built.comparisons) == 24


# ---------------------------------------------------------------------------------------------
# The functions on their own


def test_sign_flip_exact_small_cases():
    assert stats.sign_flip_test([0.1, 0.2])[0] == 0.5  # 2 of 4 flips reach |0.3|
    assert stats.sign_flip_test([0.1, 0.2, 0.3, 0.4])[0] == 2 / 16
    assert stats.sign_flip_test([0.0, 0.0, 0.0])[0] == 1.0
    assert stats.sign_flip_test([])[0] is None
    d = [0.05, -0.01, 0.03, 0.02, 0.04, -0.02, 0.01]
    assert stats.sign_flip_test(d)[0] == pytest.approx(enumerate_sign_flips(d))


def test_sign_flip_monte_carlo_close_to_exact_beyond_the_limit():
    rng = np.random.default_rng(1)
    d = rng.normal(0.01, 0.02, size=18).tolist()
    exact = enumerate_sign_flips(d)
    p, method = stats.sign_flip_test(d, np.random.default_rng(0), monte_carlo=40000)
    assert "Monte Carlo" in method
    assert p == pytest.approx(exact, abs=0.01)


def test_sign_flip_agrees_with_scipy_permutation_test():
    scipy_stats = pytest.importorskip("scipy.stats")
    d = np.array([0.031, -0.012, 0.044, 0.027, 0.009, 0.018, -0.004, 0.036])
    ours, _ = stats.sign_flip_test(d)
    theirs = scipy_stats.permutation_test(
        (d,),
        lambda x, axis: np.mean(x, axis=axis),
        permutation_type="samples",
        n_resamples=np.inf,
        alternative="two-sided",
    ).pvalue
    assert ours == pytest.approx(theirs)


def test_probability_of_improvement_is_mann_whitney_u():
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(2)
    a = np.round(rng.normal(0.9, 0.03, 30) * 200) / 200  # ties on purpose
    b = np.round(rng.normal(0.88, 0.05, 25) * 200) / 200
    u = scipy_stats.mannwhitneyu(a, b).statistic
    assert stats.probability_of_improvement({1: a}, {1: b}) == pytest.approx(u / (len(a) * len(b)))


def test_holm_known_values_and_missing():
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([None, 0.2, None]) == [None, 0.2, None]
    assert stats.holm([0.5, 0.6]) == [1.0, 1.0]


def test_bootstrap_degenerate_and_single_training_set():
    settings = BootstrapSettings(resamples=500)
    same = {200: np.full(10, 0.9), 201: np.full(7, 0.9)}
    assert stats.mean_interval(same, settings, ("x",)) == pytest.approx((0.9, 0.9))
    single = {200: np.array([0.8, 0.9, 1.0])}
    low, high = stats.mean_interval(single, settings, ("y",))
    assert 0.8 <= low < 0.9 < high <= 1.0
    assert stats.mean_interval({}, settings, ("z",)) is None
    assert stats.difference_interval({200: np.ones(3)}, {201: np.ones(3)}, settings, ("w",)) is None


def test_bootstrap_interval_covers_truth_about_as_often_as_claimed():
    """A coarse calibration check: 8 training sets, known mean, 80% intervals, 200 simulated suites."""
    settings = BootstrapSettings(resamples=400, confidence=0.8)
    rng = np.random.default_rng(3)
    covered = 0
    for trial in range(200):
        set_effects = rng.normal(0, 0.02, size=8)
        sets = {s: 0.85 + e + rng.normal(0, 0.03, size=15) for s, e in enumerate(set_effects)}
        low, high = stats.mean_interval(sets, settings, (trial,))
        covered += low <= 0.85 <= high
    assert 0.6 <= covered / 200 <= 0.95  # percentile bootstrap with 8 units undercovers a little


def test_ranks_share_ties():
    rows = [
        {
            "dataset": "d",
            "classes": [0, 1],
            "n_train": 4,
            "architecture": "a",
            "optimizer": o,
            "test_acc_mean": v,
        }
        for o, v in (("x", 0.9), ("y", 0.9), ("z", 0.8))
    ]
    ranking = {r["optimizer"]: r["mean_rank"] for r in stats.mean_ranks(rows)}
    assert ranking == {"x": 1.5, "y": 1.5, "z": 3.0}
    wins = stats.win_rates(rows)
    index = {label: i for i, label in enumerate(wins["optimizers"])}
    assert wins["matrix"][index["x"]][index["y"]] == 0.5
    assert wins["matrix"][index["z"]][index["x"]] == 0.0
