"""The leaderboard: a pure function of the stored rows (protocol.md's aggregation).

Per training set: the mean test accuracy over its interpolating networks. Per (task, architecture,
optimizer): mean and std (ddof 0) of those per-training-set means, the networks counted, and the
gain over the reference baseline in percentage points, paired over the training sets both have.
For baselines: -log2 P(train err = 0) per training set (accepted / candidates tried), averaged.

Per-network metrics a suite asked for (table network_metrics) are summarized per row the same
way: mean over training sets of per-set means, with a hierarchical bootstrap interval.

On top of the protocol's numbers (benchsuite.statistics): bootstrap intervals for the mean and the
gain, a paired sign-flip test of the gain with Holm's correction across the leaderboard, the
probability of improvement over the baseline, all pairwise comparisons within each task, and mean
ranks, win rates and benchsuite.aggregate's interval estimates and performance profiles across tasks.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from statistics import fmean, pstdev
from typing import Any

import numpy as np

from benchsuite import aggregate
from benchsuite import statistics as stats
from benchsuite.statistics import BootstrapSettings

GROUP_KEYS = ("dataset", "classes", "n_train", "architecture", "optimizer")
# When a sampler estimates P(fit) instead of counting (MCMC, SMC: Population.estimates), its cell
# is marked unreliable in the leaderboard, never silently counted, if any of these fails.
RELIABILITY = {
    "rhat_test_acc": 1.1,  # agreement of the test accuracy between its chains (at most)
    "rhat_neg_log2_p": 3.0,  # between-repeat sd of -log2 P over the i.i.d.-particle sd (at most)
    "ess_share": 0.1,  # repeat ESS of the test accuracy over the networks delivered (at least)
    "acceptance_min": 0.05,  # the moves' acceptance rate at every level (at least)
    "unique_parents_min": 0.05,  # share of distinct ancestors after every resampling (at least)
}


def _per_training_set(
    cells: Iterable[dict], networks: Iterable[dict]
) -> dict[tuple, dict[int, dict]]:
    """group key -> training-set seed -> {test accuracies, train accuracies, cell}."""
    accuracies: dict[str, list[dict]] = defaultdict(list)
    for row in networks:
        accuracies[row["cell_id"]].append(row)
    grouped: dict[tuple, dict[int, dict]] = defaultdict(dict)
    for cell in cells:
        key = tuple(cell[k] for k in GROUP_KEYS)
        rows = accuracies.get(cell["cell_id"], [])
        grouped[key][cell["training_set_seed"]] = {
            "cell": cell,
            "test": [r["test_acc"] for r in rows],
            "train": [r["train_acc"] for r in rows],
            "train_ties": [r.get("train_ties") for r in rows],
            "chains": [r.get("chain") for r in rows],
            "test_tie_shares": [
                None if r.get("test_ties") is None or not cell.get("n_test")
                else r["test_ties"] / cell["n_test"]
                for r in rows
            ],
        }
    return grouped


def _set_neg_log2_p_fit(cell: Mapping) -> float | None:
    """A sampler's own estimate where it made one (Population.estimates), else found / tried."""
    estimated = cell.get("estimates", {}).get("neg_log2_p_fit")
    if estimated is not None:
        return estimated
    return neg_log2_p_fit(cell["models_found"], cell["candidates_tried"])


def tie_shares(sets: Iterable[dict]) -> tuple[float | None, float | None]:
    """(share of networks with a tied training point, share of their test predictions that were
    ties); None where the rows predate tie counting (schema version 1) or there are no networks."""
    sets = list(sets)
    train_ties = [t for ts in sets for t in ts["train_ties"]]
    test_shares = [t for ts in sets for t in ts["test_tie_shares"]]
    if not train_ties or None in train_ties or None in test_shares:
        return None, None
    return fmean(t > 0 for t in train_ties), fmean(test_shares)


def unreliable_reasons(estimates: Mapping[str, float], test: Sequence[float], chains: Sequence) -> list[str]:
    """Why a cell's estimated P(fit) and networks should not be trusted (RELIABILITY); [] if
    nothing fails, and always [] for samplers that count (no estimates). R-hat and ESS of the
    test accuracy come from the networks (databases before they were stored give them too)."""
    if not estimates:
        return []
    reasons = []
    if estimates.get("repeats_failed", 0) > 0:
        reasons.append(f"{estimates['repeats_failed']:g} repeats failed")
    for name in ("acceptance_min", "unique_parents_min"):
        if name in estimates and estimates[name] < RELIABILITY[name]:
            reasons.append(f"{name} {estimates[name]:.3f} < {RELIABILITY[name]}")
    if estimates.get("rhat_neg_log2_p", 0.0) > RELIABILITY["rhat_neg_log2_p"]:
        reasons.append(f"R-hat of -log2 P {estimates['rhat_neg_log2_p']:.2f} > {RELIABILITY['rhat_neg_log2_p']}")
    agreement = stats.chain_agreement(test, chains)
    rhat = agreement.get("rhat_test_acc")
    if rhat is not None and rhat > RELIABILITY["rhat_test_acc"]:
        reasons.append(f"R-hat of test accuracy {rhat:.2f} > {RELIABILITY['rhat_test_acc']}")
    ess = agreement.get("ess_test_acc")
    if ess is not None and ess < RELIABILITY["ess_share"] * len(test):
        reasons.append(f"ESS of test accuracy {ess:.1f} < {RELIABILITY['ess_share']:g} x {len(test)} networks")
    return reasons


def _status(cell: Mapping) -> str:
    """How a cell ended; "ok" for databases older than schema 5."""
    return cell.get("status") or "ok"


def neg_log2_p_fit(found: int, tried: int) -> float | None:
    """-log2(found / tried); None when nothing was found (only a lower bound log2(tried) is known)."""
    if found <= 0 or tried <= 0:
        return None
    return -math.log2(found / tried)


def metric_sets(cells: Iterable[dict], metric_rows: Iterable[dict]) -> dict[tuple, dict[str, dict[int, list[float]]]]:
    """group key -> metric -> training-set seed -> the finite values of its networks, in stored
    (cell, model index) order. A metric stored for a group appears even when none of its values
    is finite (init_distance of a random interpolator), so that every row shows the column."""
    where = {c["cell_id"]: (tuple(c[k] for k in GROUP_KEYS), int(c["training_set_seed"])) for c in cells}
    collected: dict[tuple, dict[str, dict[int, list[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for row in sorted(metric_rows, key=lambda r: (r["cell_id"], r["model_index"], r["metric"])):
        if row["cell_id"] not in where:
            continue
        key, seed = where[row["cell_id"]]
        values = collected[key][row["metric"]][seed]
        if row["value"] is not None and math.isfinite(row["value"]):
            values.append(float(row["value"]))
    return collected


def metric_summaries(
    by_metric: Mapping[str, Mapping[int, list[float]]], order: Sequence[str], settings: BootstrapSettings, key: tuple
) -> dict[str, dict[str, Any]]:
    """Per metric: the mean over training sets of each set's mean (NaN values left out), its
    hierarchical bootstrap interval (as test accuracy's; its own random stream), and how many
    networks had a value; metrics in the suite's order, then any others by name."""
    names = [m for m in order if m in by_metric] + sorted(m for m in by_metric if m not in order)
    summaries = {}
    for name in names:
        sets = {seed: np.asarray(values) for seed, values in by_metric[name].items() if values}
        interval = stats.mean_interval(sets, settings, ("metric", name, *key)) if sets else None
        summaries[name] = {
            "mean": fmean(float(np.mean(v)) for v in sets.values()) if sets else None,
            "ci_low": interval[0] if interval else None,
            "ci_high": interval[1] if interval else None,
            "networks": sum(len(v) for v in sets.values()),
        }
    return summaries


def build_rows(
    cells: list[dict],
    networks: list[dict],
    reference_baseline: str | None,
    settings: BootstrapSettings | None = None,
    cache: dict | None = None,
    metric_rows: Iterable[dict] = (),
    metric_order: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """One leaderboard row per (dataset, classes, n_train, architecture, optimizer).

    `cache` (identity -> comparison) lets build_comparisons reuse the gains' bootstraps.
    `metric_rows` (the store's network_metrics) add `metrics` to the rows of groups that have
    them: name -> mean, interval and networks counted (metric_summaries); rows without stored
    metrics are exactly as before.
    """
    settings = settings or BootstrapSettings()
    cache = {} if cache is None else cache
    accuracies = stats.group_test_accuracies(networks)
    grouped = _per_training_set(cells, networks)
    metrics = metric_sets(cells, metric_rows)
    means = {
        key: {seed: fmean(ts["test"]) for seed, ts in sets.items() if ts["test"]}
        for key, sets in grouped.items()
    }
    rows = []
    for key, sets in grouped.items():
        dataset, classes, n_train, architecture, optimizer = key
        first = next(iter(sets.values()))["cell"]
        set_means = list(means[key].values())
        tried = sum(ts["cell"]["candidates_tried"] for ts in sets.values())
        tied_fit_share, tied_test_share = tie_shares(sets.values())
        row = {
            "dataset": dataset,
            "classes": [int(c) for c in classes.split(",")],
            "class_names": first["class_names"],
            "n_train": n_train,
            "architecture": architecture,
            "optimizer": optimizer,
            "role": first["role"],
            "prior": first["prior"],
            "training_sets": len(set_means),
            "models": sum(len(ts["test"]) for ts in sets.values()),
            "models_requested": sum(ts["cell"]["models_requested"] for ts in sets.values()),
            "exhausted": any(ts["cell"]["exhausted"] for ts in sets.values()),
            "test_acc_mean": fmean(set_means) if set_means else None,
            "test_acc_std": pstdev(set_means) if set_means else None,
            "train_acc_mean": _mean_of_all(ts["train"] for ts in sets.values()),
            "tied_fit_share": tied_fit_share,
            "tied_test_share": tied_test_share,
            "gain_pp": None,
            "baseline": None,
            "neg_log2_p_fit": None,
            "candidates": tried,  # networks drawn (baseline) or trained (optimizer) up to the last one kept
            "epochs": first["epochs"],
            "seconds": sum(ts["cell"]["seconds"] for ts in sets.values()),
            # cells that ended otherwise than ok hold no networks (protocol.CELL_STATUSES)
            "diverged": sum(_status(ts["cell"]) == "diverged" for ts in sets.values()),
            "timed_out": sum(_status(ts["cell"]) == "timed_out" for ts in sets.values()),
            "diverged_networks": sum(ts["cell"].get("diverged") or 0 for ts in sets.values()),
            **_interval_keys(accuracies.get(key, {}), settings, key),
        }
        if key in metrics:
            row["metrics"] = metric_summaries(metrics[key], metric_order, settings, key)
        if first["role"] == "baseline":
            per_set = [_set_neg_log2_p_fit(ts["cell"]) for ts in sets.values() if _status(ts["cell"]) == "ok"]
            known = [v for v in per_set if v is not None]
            row["neg_log2_p_fit"] = fmean(known) if known and len(known) == len(per_set) else None
            errors = [ts["cell"].get("estimates", {}).get("neg_log2_p_fit_se") for ts in sets.values()]
            if known and all(e is not None for e in errors):  # estimated, not counted
                row["neg_log2_p_fit_se"] = math.sqrt(sum(e * e for e in errors)) / len(errors)
                ess = [stats.chain_agreement(ts["test"], ts["chains"]).get("ess_test_acc") for ts in sets.values()]
                row["ess_test_acc"] = sum(ess) if all(e is not None for e in ess) else None
            row["unreliable"] = sorted(
                {
                    reason
                    for ts in sets.values()
                    for reason in unreliable_reasons(ts["cell"].get("estimates", {}), ts["test"], ts["chains"])
                }
            )
        elif reference_baseline is not None:
            reference = means.get((dataset, classes, n_train, architecture, reference_baseline), {})
            paired = [seed for seed in means[key] if seed in reference]
            if paired:
                row["gain_pp"] = 100 * fmean(means[key][s] - reference[s] for s in paired)
                row["baseline"] = reference_baseline
                reference_sets = accuracies[key[:-1] + (reference_baseline,)]
                row.update(
                    _gain_keys(
                        accuracies[key], reference_sets, settings, key, reference_baseline, cache
                    )
                )
        rows.append(row)
    for row, adjusted in zip(rows, stats.holm([r["p_value"] for r in rows])):
        row["p_value_holm"] = adjusted
    rows.sort(
        key=lambda r: (
            r["dataset"],
            r["classes"],
            r["architecture"],
            r["n_train"],
            r["role"] != "baseline",
            r["optimizer"],
        )
    )
    return rows


def _interval_keys(sets: dict, settings: BootstrapSettings, key: tuple) -> dict[str, Any]:
    """The mean's interval, and empty gain statistics that optimizer rows fill in."""
    interval = stats.mean_interval(sets, settings, key)
    return {
        "test_acc_ci_low": interval[0] if interval else None,
        "test_acc_ci_high": interval[1] if interval else None,
        "gain_ci_low": None,
        "gain_ci_high": None,
        "p_value": None,
        "p_value_holm": None,
        "test": None,
        "prob_improvement": None,
        "baseline_percentile": None,
        "confidence": settings.confidence,
        "bootstrap_resamples": settings.resamples,
        "bootstrap_seed": settings.seed,
    }


def _compare(
    a: dict, b: dict, settings: BootstrapSettings, identity: tuple, cache: dict
) -> dict[str, Any]:
    """stats.compare_sets, once per identity (a gain is also a row of the comparisons table)."""
    if identity not in cache:
        cache[identity] = stats.compare_sets(a, b, settings, identity)
    return dict(cache[identity])


def _gain_keys(
    sets: dict, reference: dict, settings: BootstrapSettings, key: tuple, baseline: str, cache: dict
) -> dict[str, Any]:
    """Gain interval (pp), paired test and P(improvement) against the reference baseline."""
    comparison = _compare(sets, reference, settings, key[:-1] + (key[-1], baseline), cache)
    improvement = comparison["prob_improvement"]
    return {
        "gain_ci_low": comparison["difference_ci_low"],
        "gain_ci_high": comparison["difference_ci_high"],
        "p_value": comparison["p_value"],
        "test": comparison["test"],
        "prob_improvement": improvement,
        "baseline_percentile": None if improvement is None else 100 * improvement,
    }


def _mean_of_all(groups: Iterable[list[float]]) -> float | None:
    values = [v for group in groups for v in group]
    return fmean(values) if values else None


def build_comparisons(
    rows: Sequence[dict],
    networks: list[dict],
    settings: BootstrapSettings,
    cache: dict | None = None,
) -> list[dict[str, Any]]:
    """Every pair of optimizers (baselines included) within each task, Holm-corrected together.

    A pair is oriented as the leaderboard lists it (optimizers before baselines, then by label), so
    "sgd vs gnc" reads as the gain of sgd.
    """
    accuracies = stats.group_test_accuracies(networks)
    cache = {} if cache is None else cache
    by_task: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        by_task[
            (
                row["dataset"],
                ",".join(str(c) for c in row["classes"]),
                row["n_train"],
                row["architecture"],
            )
        ].append(row)
    comparisons = []
    for task, task_rows in by_task.items():
        task_rows = sorted(task_rows, key=lambda r: (r["role"] == "baseline", r["optimizer"]))
        for i, first in enumerate(task_rows):
            for second in task_rows[i + 1 :]:
                a, b = first["optimizer"], second["optimizer"]
                result = _compare(
                    accuracies.get(task + (a,), {}),
                    accuracies.get(task + (b,), {}),
                    settings,
                    task + (a, b),
                    cache,
                )
                if not result["training_sets"]:
                    continue
                comparisons.append(
                    {
                        "dataset": first["dataset"], "classes": first["classes"], "class_names": first["class_names"],
                        "n_train": first["n_train"], "architecture": first["architecture"],
                        "optimizer_a": a, "optimizer_b": b,
                        "test_acc_mean_a": first["test_acc_mean"], "test_acc_mean_b": second["test_acc_mean"],
                        **result,
                    }
                )  # fmt: skip
    for comparison, adjusted in zip(comparisons, stats.holm([c["p_value"] for c in comparisons])):
        comparison["p_value_holm"] = adjusted
    return comparisons


def training_set_means(networks: list[dict]) -> list[dict[str, Any]]:
    """Per (task, N, architecture, method): each training set's mean test accuracy, the unit of
    every paired comparison (what the HTML page compares any two methods with, in the browser)."""
    return [
        {
            "dataset": dataset, "classes": [int(c) for c in str(classes).split(",")], "n_train": n_train,
            "architecture": architecture, "optimizer": optimizer,
            "means": {str(seed): float(values.mean()) for seed, values in sets.items() if len(values)},
        }
        for (dataset, classes, n_train, architecture, optimizer), sets in stats.group_test_accuracies(networks).items()
    ]  # fmt: skip


class LeaderboardRows(list):
    """The leaderboard rows (a plain list, as before) carrying what the richer reports add.

    Attributes: `comparisons` (pairwise, per task), `ranking` (mean ranks across tasks),
    `win_rates` (matrix), `aggregate` (aggregate.across_tasks: mean and IQM gains with intervals,
    P(improvement) over SGD, performance profiles), `by_architecture` (aggregate.by_architecture: the
    IQM gain and rank per architecture; None with one), `set_means` (training_set_means), `settings` (the bootstrap's), `runs`
    (the runs table: resolved suite and environment) and `reference_baseline`. JSON and CSV writers
    see only the rows.
    """

    comparisons: list[dict]
    ranking: list[dict]
    win_rates: dict
    aggregate: dict
    by_architecture: dict | None
    set_means: list[dict]
    settings: BootstrapSettings
    runs: list[dict]
    reference_baseline: str | None


def build_leaderboard(
    cells: list[dict],
    networks: list[dict],
    reference_baseline: str | None,
    settings: BootstrapSettings | None = None,
    runs: Sequence[dict] = (),
    metric_rows: Iterable[dict] = (),
    metric_order: Sequence[str] = (),
) -> LeaderboardRows:
    """Rows plus comparisons and cross-task aggregates, all from the stored rows."""
    settings = settings or BootstrapSettings()
    cache: dict = {}
    rows = LeaderboardRows(
        build_rows(cells, networks, reference_baseline, settings, cache, metric_rows, metric_order)
    )
    rows.comparisons = build_comparisons(rows, networks, settings, cache)
    rows.ranking = stats.mean_ranks(rows)
    rows.win_rates = stats.win_rates(rows)
    rows.aggregate = aggregate.across_tasks(rows, networks, reference_baseline, settings)
    rows.by_architecture = aggregate.by_architecture(rows, networks, reference_baseline, settings)
    rows.set_means = training_set_means(networks)
    rows.settings = settings
    rows.runs = list(runs)
    rows.reference_baseline = reference_baseline
    return rows


def leaderboard_from_store(
    store, reference_baseline: str | None = None, settings: BootstrapSettings | None = None
) -> LeaderboardRows:
    """Rows from a Store; the reference baseline defaults to the one named by the stored suite."""
    runs = store.runs()
    if reference_baseline is None and runs:
        reference_baseline = runs[-1]["suite"].get("leaderboard", {}).get("baseline")
    estimates = store.cell_estimates()
    cells = [{**cell, "estimates": estimates.get(cell["cell_id"], {})} for cell in store.cells()]
    order = runs[-1]["suite"].get("metrics", []) if runs else []
    return build_leaderboard(
        cells, store.network_rows(), reference_baseline, settings, runs, store.network_metrics(), order
    )
