"""The across-task aggregate (benchsuite.aggregate), validated against independent estimates.

- IQM against scipy.stats.trim_mean(x, 0.25);
- the stratified bootstrap's coverage on simulated leaderboards with a known true value, inside a
  band from the binomial distribution (and a pooled, unstratified bootstrap shown to fall outside
  it, so the band can tell a wrong method);
- every number of a real leaderboard's aggregate recomputed from raw SQL rows with loops: the
  gains, their mean and IQM, the documented random stream, P(> sgd) pair by pair, the profiles
  by integrating on a grid.
"""

from __future__ import annotations

import hashlib
import math
import sqlite3
from collections import defaultdict
from pathlib import Path
from statistics import fmean

import numpy as np
import pytest
from stored_results import make_results

from benchsuite import aggregate
from benchsuite.leaderboard import leaderboard_from_store
from benchsuite.statistics import BootstrapSettings
from benchsuite.store import Store

scipy_stats = pytest.importorskip("scipy.stats")


# ---------------------------------------------------------------------------------------------
# IQM


def test_iqm_is_scipys_25_percent_trimmed_mean():
    rng = np.random.default_rng(11)
    for size in range(1, 41):
        values = rng.normal(10, 5, size=size)
        assert aggregate.interquartile_mean(values) == pytest.approx(scipy_stats.trim_mean(values, 0.25), abs=1e-12)
        ties = np.round(values)  # ties at the cut points
        assert aggregate.interquartile_mean(ties) == pytest.approx(scipy_stats.trim_mean(ties, 0.25), abs=1e-12)
    table = rng.exponential(3, size=(7, 13))  # along the last axis, as the bootstrap uses it
    assert aggregate.interquartile_mean(table) == pytest.approx(scipy_stats.trim_mean(table, 0.25, axis=1))
    # an outlier moves the mean, not the IQM
    assert aggregate.interquartile_mean([1, 2, 3, 4, 5, 6, 7, 1000]) == pytest.approx(4.5)


# ---------------------------------------------------------------------------------------------
# Coverage on simulated leaderboards


def binomial_band(trials: int, coverage: float) -> tuple[float, float]:
    """Central 99.9% of the share of covered truths when each interval covers with `coverage`."""
    low, high = scipy_stats.binom.ppf([0.0005, 0.9995], trials, coverage)
    return low / trials, high / trials


def test_stratified_interval_covers_the_true_mean_and_iqm_as_the_binomial_allows():
    """400 simulated leaderboards: 5 tasks far apart (task effects +-8 points), 12 training sets
    each, gains normal with sd 2 around the task's centre; the centres are symmetric around 10, so
    10 is both the true mean gain and the true IQM. A percentile bootstrap's variance is
    (n - 1) / n of the true one, so its 95% interval covers with 2 Phi(1.96 sqrt(11/12)) - 1 = 0.939
    (normal approximation); the observed share must lie in that binomial's central 99.9%."""
    settings = BootstrapSettings(resamples=1000)
    trials, per_task, truth = 400, 12, 10.0
    centres = truth + np.linspace(-8, 8, 5)
    expected = 2 * scipy_stats.norm.cdf(1.96 * math.sqrt((per_task - 1) / per_task)) - 1
    band = binomial_band(trials, expected)
    rng = np.random.default_rng(1)
    mean_hits = iqm_hits = pooled_hits = 0
    for trial in range(trials):
        strata = [c + rng.normal(0, 2, size=per_task) for c in centres]
        summary = aggregate.gain_summary(strata, settings, ("simulated", trial))
        mean_hits += summary["gain_mean_ci_low"] <= truth <= summary["gain_mean_ci_high"]
        iqm_hits += summary["gain_iqm_ci_low"] <= truth <= summary["gain_iqm_ci_high"]
        # the wrong method: resampling the pooled gains ignores that tasks are fixed strata
        pooled = np.concatenate(strata)
        replicates = pooled[rng.integers(0, pooled.size, size=(1000, pooled.size))].mean(axis=1)
        low, high = np.quantile(replicates, [0.025, 0.975])
        pooled_hits += low <= truth <= high
    assert band[0] <= mean_hits / trials <= band[1], (mean_hits / trials, band)
    assert band[0] <= iqm_hits / trials <= band[1], (iqm_hits / trials, band)
    assert not band[0] <= pooled_hits / trials <= band[1], (pooled_hits / trials, band)


def test_tasks_never_mix_in_a_resample():
    """Constant gains within each task: every stratified resample has the same mean, so the
    interval is a point; a bootstrap that drew across tasks would spread."""
    settings = BootstrapSettings(resamples=500)
    summary = aggregate.gain_summary([np.full(3, 2.0), np.full(4, 10.0)], settings, ("x",))
    assert summary["gain_mean"] == 6.0
    assert summary["gain_mean_ci_low"] == summary["gain_mean_ci_high"] == 6.0
    assert summary["gain_iqm_ci_low"] == summary["gain_iqm_ci_high"] == summary["gain_iqm"]


def test_one_training_set_per_task_gives_no_interval():
    settings = BootstrapSettings(resamples=500)
    summary = aggregate.gain_summary([np.array([3.0]), np.array([5.0])], settings, ("x",))
    assert summary["gain_mean"] == 4.0 and summary["gain_iqm"] == 4.0
    assert summary["gain_mean_ci_low"] is None and summary["gain_iqm_ci_high"] is None
    # one task with two sets is enough to resample; the single-set task stays constant
    summary = aggregate.gain_summary([np.array([3.0]), np.array([4.0, 6.0])], settings, ("x",))
    assert 3.5 <= summary["gain_mean_ci_low"] < summary["gain_mean_ci_high"] <= 4.5


# ---------------------------------------------------------------------------------------------
# Performance profiles


def test_profile_counts_tasks_within_tau_and_a_missing_task_as_never():
    rows = [
        {"dataset": "d", "classes": [0, 1], "n_train": n, "architecture": "a", "role": role, "optimizer": o, "test_acc_mean": v}
        for n, o, role, v in (
            (4, "x", "optimizer", 0.90), (4, "y", "optimizer", 0.885), (4, "g", "baseline", 0.99),
            (8, "x", "optimizer", 0.80), (8, "y", "optimizer", 0.83),
            (16, "x", "optimizer", 0.70),
        )
    ]  # fmt: skip
    profiles = aggregate.performance_profiles(rows, taus=(0, 1, 2, 5), tau_max=10)
    assert set(profiles) == {"x", "y"}  # the baseline is neither a row nor the best
    assert profiles["x"]["profile"] == pytest.approx([2 / 3, 2 / 3, 2 / 3, 1.0])  # gaps 0, 3, 0
    assert profiles["x"]["profile_tau_all"] == pytest.approx(3.0)
    assert profiles["x"]["profile_area"] == pytest.approx((1 + 0.7 + 1) / 3)
    assert profiles["y"]["profile"] == pytest.approx([1 / 3, 1 / 3, 2 / 3, 2 / 3])  # gaps 1.5, 0, -
    assert profiles["y"]["profile_tau_all"] is None
    assert profiles["y"]["profile_area"] == pytest.approx((0.85 + 1 + 0) / 3)


# ---------------------------------------------------------------------------------------------
# A real leaderboard, recomputed from the database


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    # one missing baseline cell: one task pairs over three training sets, the others over four
    return make_results(tmp_path_factory.mktemp("aggregate") / "out", skip={((3, 8), 8, "1", "gnc", 203)})


@pytest.fixture(scope="module")
def built(folder):
    with Store(folder / "results.sqlite") as store:
        return leaderboard_from_store(store)


@pytest.fixture(scope="module")
def raw(folder) -> dict[tuple, dict[int, list[float]]]:
    return raw_accuracies(folder)


def raw_accuracies(folder: Path) -> dict[tuple, dict[int, list[float]]]:
    """(dataset, classes, n_train, architecture, optimizer) -> training set seed -> test accuracies,
    straight from SQL."""
    with sqlite3.connect(folder / "results.sqlite") as db:
        records = db.execute(
            "SELECT c.dataset, c.classes, c.n_train, c.architecture, c.optimizer, c.training_set_seed, "
            "n.test_acc FROM networks n JOIN cells c ON c.cell_id = n.cell_id ORDER BY c.cell_id, n.model_index"
        ).fetchall()
    grouped: dict[tuple, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for dataset, classes, n, arch, opt, seed, acc in records:
        grouped[(dataset, classes, n, arch, opt)][seed].append(acc)
    return grouped


def loop_generator(seed: int, *identity) -> np.random.Generator:
    digest = int.from_bytes(hashlib.sha256("|".join(map(str, identity)).encode()).digest()[:8], "big")
    return np.random.default_rng([seed, digest])


def loop_stratified(strata: list[list[float]], resamples: int, rng) -> list[list[list[float]]]:
    """The documented stream: per task in order, picks of shape (resamples, n); per replicate the
    drawn values of every task."""
    drawn = [[[] for _ in strata] for _ in range(resamples)]
    for t, values in enumerate(strata):
        picks = rng.integers(0, len(values), size=(resamples, len(values))).tolist()
        for b in range(resamples):
            drawn[b][t] = [values[i] for i in picks[b]]
    return drawn


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def pairs_better(a: list[float], b: list[float]) -> float:
    return sum(1.0 if x > y else 0.5 if x == y else 0.0 for x in a for y in b) / (len(a) * len(b))


def test_gains_mean_iqm_and_intervals_recomputed_from_raw_rows(built, raw):
    settings = built.settings
    record = built.aggregate
    tasks = sorted({key[:4] for key in raw})
    assert record["tasks"] == len(tasks) == 8 and record["baseline"] == "gnc"
    assert [e["optimizer"] for e in record["optimizers"]] == sorted(
        ("adam", "sgd"), key=lambda o: -next(e["gain_iqm"] for e in record["optimizers"] if e["optimizer"] == o)
    )
    for entry in record["optimizers"]:
        label = entry["optimizer"]
        strata = []
        for task in tasks:
            mine, base = raw[task + (label,)], raw[task + ("gnc",)]
            strata.append([100 * (fmean(mine[s]) - fmean(base[s])) for s in sorted(set(mine) & set(base))])
        assert sorted(len(s) for s in strata) == [3] + [4] * 7
        assert entry["tasks"] == 8 and entry["training_sets"] == 31 and entry["single_set_tasks"] == 0
        assert entry["gain_mean"] == pytest.approx(fmean(fmean(s) for s in strata))
        assert entry["gain_iqm"] == pytest.approx(scipy_stats.trim_mean([g for s in strata for g in s], 0.25))
        drawn = loop_stratified(strata, settings.resamples, loop_generator(settings.seed, "across tasks", label, "gnc"))
        means = [fmean(fmean(task) for task in replicate) for replicate in drawn]
        iqms = [scipy_stats.trim_mean([g for task in replicate for g in task], 0.25) for replicate in drawn]
        alpha = 1 - settings.confidence
        assert entry["gain_mean_ci_low"] == pytest.approx(quantile(means, alpha / 2))
        assert entry["gain_mean_ci_high"] == pytest.approx(quantile(means, 1 - alpha / 2))
        assert entry["gain_iqm_ci_low"] == pytest.approx(quantile(iqms, alpha / 2))
        assert entry["gain_iqm_ci_high"] == pytest.approx(quantile(iqms, 1 - alpha / 2))


def test_probability_of_improvement_over_sgd_recomputed_pair_by_pair(built, raw):
    settings = built.settings
    record = built.aggregate
    assert record["reference_optimizer"] == "sgd"
    by_label = {e["optimizer"]: e for e in record["optimizers"]}
    assert by_label["sgd"]["prob_improvement"] is None  # not against itself
    tasks = sorted({key[:4] for key in raw})
    strata = [
        [pairs_better(raw[t + ("adam",)][s], raw[t + ("sgd",)][s]) for s in sorted(raw[t + ("adam",)])] for t in tasks
    ]
    adam = by_label["adam"]
    assert adam["prob_improvement"] == pytest.approx(fmean(fmean(s) for s in strata))
    drawn = loop_stratified(strata, settings.resamples, loop_generator(settings.seed, "across tasks improvement", "adam", "sgd"))
    replicates = [fmean(fmean(task) for task in replicate) for replicate in drawn]
    assert adam["prob_improvement_ci_low"] == pytest.approx(quantile(replicates, 0.025))
    assert adam["prob_improvement_ci_high"] == pytest.approx(quantile(replicates, 0.975))
    assert adam["prob_improvement"] < 0.5  # the fixture's adam sits below sgd (stored_results.LEVELS)


def test_profiles_recomputed_by_integrating_on_a_grid(built):
    """Shares counted per tau, the area by the trapezoid rule on a 0.0001-point grid, tau for all
    tasks as the first grid point where the profile is 1."""
    scores = defaultdict(dict)
    for row in built:
        if row["role"] == "optimizer":
            task = (row["dataset"], tuple(row["classes"]), row["n_train"], row["architecture"])
            scores[task][row["optimizer"]] = 100 * row["test_acc_mean"]
    grid = np.linspace(0, built.aggregate["profile_tau_max"], 100001)
    for entry in built.aggregate["optimizers"]:
        gaps = np.array([max(s.values()) - s[entry["optimizer"]] for s in scores.values()])
        for tau, value in zip(built.aggregate["profile_taus"], entry["profile"]):
            assert value == sum(g <= tau + 1e-9 for g in gaps) / len(gaps)
        curve = (gaps[None, :] <= grid[:, None]).mean(axis=1)
        area = float(np.sum((curve[1:] + curve[:-1]) / 2 * np.diff(grid))) / grid[-1]
        assert entry["profile_area"] == pytest.approx(area, abs=1e-4)
        assert gaps.max() < grid[-1]  # the fixture's optimizers differ by a few points
        assert entry["profile_tau_all"] == pytest.approx(grid[np.argmax(curve >= 1.0)], abs=2e-4)
    assert sorted(e["profile_tau_all"] > 0 for e in built.aggregate["optimizers"]) == [False, True]


def test_an_optimizer_more_or_less_moves_no_other_interval(folder, built):
    with Store(folder / "results.sqlite") as store:
        cells, networks = store.cells(), store.network_rows()
    without_adam = aggregate.across_tasks(
        [r for r in built if r["optimizer"] != "adam"], [n for n in networks if n["optimizer"] != "adam"], "gnc", built.settings
    )
    (alone,) = without_adam["optimizers"]
    full = next(e for e in built.aggregate["optimizers"] if e["optimizer"] == "sgd")
    for key in ("gain_mean", "gain_mean_ci_low", "gain_mean_ci_high", "gain_iqm", "gain_iqm_ci_low", "gain_iqm_ci_high"):
        assert alone[key] == full[key]
    assert alone["profile"] == [1.0] * 4  # alone, it is the best everywhere
    assert cells  # the database was read


# ---------------------------------------------------------------------------------------------
# By architecture: the same numbers per architecture, recomputed from raw rows with loops

ZOO = ("sgd", "adam", "lion", "radam", "tiger", "gnc")


@pytest.fixture(scope="module")
def zoo_folder(tmp_path_factory) -> Path:
    # five optimizers at two widths; tiger never ran at width 1, so it has one architecture only
    missing = {((0, 1), n, "1", "tiger", s) for n in (4, 8) for s in (200, 201, 202, 203)}
    missing |= {((3, 8), n, "1", "tiger", s) for n in (4, 8) for s in (200, 201, 202, 203)}
    return make_results(tmp_path_factory.mktemp("by-architecture") / "out", optimizers=ZOO, skip=missing, rng_seed=3)


def test_by_architecture_recomputed_from_raw_rows(zoo_folder):
    with Store(zoo_folder / "results.sqlite") as store:
        built = leaderboard_from_store(store)
    raw = {(arch, dataset, classes, n, opt): sets for (dataset, classes, n, arch, opt), sets in raw_accuracies(zoo_folder).items()}
    record, settings = built.by_architecture, built.settings
    assert record["architectures"] == ["mlp w=1 d=4", "mlp w=1/6 d=4"] and record["baseline"] == "gnc"
    by_label = {e["optimizer"]: e["by_architecture"] for e in record["optimizers"]}
    assert sorted(by_label) == sorted(ZOO[:-1]) and list(by_label["tiger"]) == ["mlp w=1/6 d=4"]
    iqms: dict[str, dict[str, float]] = defaultdict(dict)
    for arch in record["architectures"]:
        tasks = sorted({key[1:4] for key in raw if key[0] == arch})
        for label in ZOO[:-1]:
            strata = []
            for task in tasks:
                mine, base = raw.get((arch, *task, label), {}), raw[(arch, *task, "gnc")]
                gains = [100 * (fmean(mine[s]) - fmean(base[s])) for s in sorted(set(mine) & set(base))]
                if gains:
                    strata.append(gains)
            if not strata:
                continue
            entry = by_label[label][arch]
            iqms[arch][label] = scipy_stats.trim_mean([g for s in strata for g in s], 0.25)
            assert entry["tasks"] == len(strata) == 4
            assert entry["gain_iqm"] == pytest.approx(iqms[arch][label])
            generator = loop_generator(settings.seed, "across tasks", label, "gnc", arch)
            drawn = loop_stratified(strata, settings.resamples, generator)
            replicates = [scipy_stats.trim_mean([g for task in replicate for g in task], 0.25) for replicate in drawn]
            assert entry["gain_iqm_ci_low"] == pytest.approx(quantile(replicates, 0.025))
            assert entry["gain_iqm_ci_high"] == pytest.approx(quantile(replicates, 0.975))
        labels = sorted(iqms[arch])
        ranks = scipy_stats.rankdata([-iqms[arch][label] for label in labels])
        assert [by_label[label][arch]["rank"] for label in labels] == list(ranks)
    (correlation,) = record["rank_correlations"]
    both = sorted(set(iqms["mlp w=1 d=4"]) & set(iqms["mlp w=1/6 d=4"]))
    assert correlation["optimizers"] == len(both) == 4
    expected = scipy_stats.spearmanr([iqms["mlp w=1 d=4"][o] for o in both], [iqms["mlp w=1/6 d=4"][o] for o in both])
    assert correlation["spearman"] == pytest.approx(expected.statistic)


def test_by_architecture_needs_two_architectures_and_a_baseline(zoo_folder):
    with Store(zoo_folder / "results.sqlite") as store:
        built = leaderboard_from_store(store)
        networks = store.network_rows()
    narrow = [r for r in built if r["architecture"] == "mlp w=1/6 d=4"]
    assert aggregate.by_architecture(narrow, networks, "gnc", built.settings) is None
    assert aggregate.by_architecture(built, networks, None, built.settings) is None
    without_baseline_at_width_1 = [n for n in networks if not (n["optimizer"] == "gnc" and n["architecture"] == "mlp w=1 d=4")]
    assert aggregate.by_architecture(built, without_baseline_at_width_1, "gnc", built.settings) is None  # no gains there


def test_interpolation_rate_counts_every_network_trained_from_raw_rows(folder, tmp_path):
    """fit %: networks kept over networks trained, per optimizer over all its cells; a cell that
    found nothing (diverged) still adds what it trained."""
    import shutil

    copy = tmp_path / "out"
    shutil.copytree(folder, copy)
    with Store(copy / "results.sqlite") as store:
        cell = dict(next(c for c in store.cells() if c["optimizer"] == "adam"))
        cell.update(cell_id="adam-diverged", training_set_seed=204, candidates_tried=37, status="diverged", diverged=37)
        cell.pop("models_found"), cell.pop("finished_at")
        store.add_cell(cell, [])
        built = leaderboard_from_store(store)
    with sqlite3.connect(copy / "results.sqlite") as db:
        fit = dict(db.execute("SELECT c.optimizer, COUNT(*) FROM networks n JOIN cells c ON c.cell_id = n.cell_id GROUP BY c.optimizer"))
        trained = dict(db.execute("SELECT optimizer, SUM(candidates_tried) FROM cells GROUP BY optimizer"))
    assert trained["adam"] >= fit["adam"] + 37  # the diverged cell's 37 networks count
    for entry in built.aggregate["optimizers"]:
        label = entry["optimizer"]
        assert (entry["networks_fit"], entry["networks_trained"]) == (fit[label], trained[label])
        assert entry["fit_share"] == fit[label] / trained[label] < 1


def test_tasks_with_a_gain_clearly_above_or_below_zero_are_the_rows_intervals_counted(built):
    for entry in built.aggregate["optimizers"]:
        own = [r for r in built if r["optimizer"] == entry["optimizer"]]
        assert entry["tasks_above_zero"] == sum(r["gain_ci_low"] > 0 for r in own if r["gain_ci_low"] is not None)
        assert entry["tasks_below_zero"] == sum(r["gain_ci_high"] < 0 for r in own if r["gain_ci_high"] is not None)
    # the fixture's optimizers sit well above G&C (stored_results.LEVELS): every task above zero
    assert [(e["tasks_above_zero"], e["tasks_below_zero"]) for e in built.aggregate["optimizers"]] == [(8, 0), (8, 0)]
