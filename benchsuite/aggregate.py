"""Across-task aggregates with intervals: how an optimizer does over all tasks at once.

Mean ranks and win rates (statistics.mean_ranks, win_rates) say who is ahead but not by how much
or how surely. These add that:

- rliable's (Agarwal et al. 2021, "Deep RL at the edge of the statistical precipice"): the unit is
  one (task, training set) gain, the optimizer's mean test accuracy on that training set minus the
  baseline's, in points. Per optimizer: the mean gain (mean over tasks of each task's mean over
  training sets, rliable's aggregate_mean) and the interquartile mean (IQM: the mean of the middle
  half of all (task, training set) gains pooled, scipy's trim_mean(x, 0.25), rliable's
  aggregate_iqm), each with a stratified percentile bootstrap interval: training sets are drawn
  with replacement within each task, independently per task, so tasks never mix. Also the
  probability of improvement over a reference optimizer (SGD): statistics.probability_of_improvement
  per task, averaged over tasks, with the same kind of interval.
- performance profiles (Dolan & Moré 2002, as AlgoPerf uses them): for each optimizer, the share
  of tasks on which its mean test accuracy is within tau points of the best optimizer's there.
- the interpolation rate: the share of the networks an optimizer trained that fit the training
  set (an optimizer that often fails to interpolate is reported, not hidden behind its gains).
- by architecture: the IQM gain and its rank per architecture, and the rank correlation between
  architectures, so a reader sees whether width or family reorders the optimizers.

Each optimizer's intervals come from their own generator (statistics.generator with the
optimizer's label), so adding an optimizer never moves another's interval.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from benchsuite import statistics as stats
from benchsuite.correlation import average_ranks, spearman
from benchsuite.statistics import BootstrapSettings

REFERENCE_OPTIMIZER = "sgd"  # P(improvement) is reported over this optimizer when it ran
PROFILE_TAUS = (0.0, 1.0, 2.0, 5.0)  # points of test accuracy at which profiles are tabulated
PROFILE_TAU_MAX = 10.0  # the profile's area is taken over [0, PROFILE_TAU_MAX] points
TOLERANCE = 1e-9  # points: a mean equal to the best, up to float rounding, is the best


def interquartile_mean(values: np.ndarray) -> np.ndarray:
    """Mean of the middle half along the last axis: n // 4 values cut from each end, as
    scipy.stats.trim_mean(x, 0.25) cuts int(0.25 n)."""
    ordered = np.sort(np.asarray(values, dtype=float), axis=-1)
    count = ordered.shape[-1]
    cut = count // 4
    return ordered[..., cut : count - cut].mean(axis=-1)


def task_mean(strata: Sequence[np.ndarray]) -> np.ndarray:
    """Mean over tasks of each task's mean along the last axis (each task weighs the same)."""
    return np.mean([np.mean(s, axis=-1) for s in strata], axis=0)


def pooled_iqm(strata: Sequence[np.ndarray]) -> np.ndarray:
    """IQM of every task's values pooled along the last axis."""
    return interquartile_mean(np.concatenate(strata, axis=-1))


def stratified_resamples(
    strata: Sequence[np.ndarray], resamples: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Each task's values drawn with replacement within the task, shape (resamples, n_task).

    The stream, exactly: for each task in order, picks = rng.integers(0, n, size=(resamples, n)).
    """
    return [
        np.asarray(s, dtype=float)[rng.integers(0, len(s), size=(resamples, len(s)))] for s in strata
    ]


def resamplable(strata: Sequence[np.ndarray]) -> bool:
    """Whether a stratified bootstrap has anything to draw: some task with two or more units."""
    return any(len(s) > 1 for s in strata)


def gain_summary(
    strata: Sequence[np.ndarray], settings: BootstrapSettings, identity: Sequence[Any]
) -> dict[str, Any]:
    """Mean and IQM of per-(task, training set) gains (points), with stratified intervals drawn
    from one stream (both statistics read the same resamples); no intervals without anything to
    resample (one training set per task)."""
    out: dict[str, Any] = {
        "gain_mean": float(task_mean(strata)),
        "gain_iqm": float(pooled_iqm(strata)),
        "gain_mean_ci_low": None, "gain_mean_ci_high": None,
        "gain_iqm_ci_low": None, "gain_iqm_ci_high": None,
    }  # fmt: skip
    if resamplable(strata):
        drawn = stratified_resamples(strata, settings.resamples, stats.generator(settings, "across tasks", *identity))
        for name, replicates in (("gain_mean", task_mean(drawn)), ("gain_iqm", pooled_iqm(drawn))):
            out[f"{name}_ci_low"], out[f"{name}_ci_high"] = stats.percentile_interval(replicates, settings.confidence)
    return out


def improvement_summary(
    strata: Sequence[np.ndarray], settings: BootstrapSettings, identity: Sequence[Any]
) -> dict[str, Any]:
    """P(improvement) averaged over tasks (each task's mean over its training sets' shares), with
    its stratified interval."""
    out: dict[str, Any] = {
        "prob_improvement": float(task_mean(strata)),
        "prob_improvement_ci_low": None,
        "prob_improvement_ci_high": None,
    }
    if resamplable(strata):
        rng = stats.generator(settings, "across tasks improvement", *identity)
        replicates = task_mean(stratified_resamples(strata, settings.resamples, rng))
        low, high = stats.percentile_interval(replicates, settings.confidence)
        out["prob_improvement_ci_low"], out["prob_improvement_ci_high"] = low, high
    return out


def profile(gaps: Sequence[float], tasks: int, taus: Sequence[float], tau_max: float) -> dict[str, Any]:
    """One optimizer's performance profile from its gaps to the best (points) on the tasks it ran,
    out of `tasks` in all (a task it did not run counts as never within reach).

    at: share of tasks with gap <= tau, per tau. area: the profile's integral over [0, tau_max]
    divided by tau_max (1 = best everywhere), exactly mean over tasks of max(0, 1 - gap / tau_max).
    tau_all: the smallest tau at which the profile reaches 1 (the largest gap), None if it never does.
    """
    gaps = np.asarray(gaps, dtype=float)
    return {
        "profile": [float(np.sum(gaps <= tau + TOLERANCE)) / tasks for tau in taus],
        "profile_area": float(np.sum(np.clip(1 - gaps / tau_max, 0, 1))) / tasks,
        "profile_tau_all": float(gaps.max()) if len(gaps) == tasks else None,
    }


def task_key(row: Mapping) -> tuple:
    """(dataset, classes as in the store, n_train, architecture) of a leaderboard row."""
    return (row["dataset"], ",".join(str(c) for c in row["classes"]), row["n_train"], row["architecture"])


def performance_profiles(
    rows: Iterable[Mapping], taus: Sequence[float] = PROFILE_TAUS, tau_max: float = PROFILE_TAU_MAX
) -> dict[str, dict[str, Any]]:
    """optimizer -> profile (see `profile`), over the tasks any optimizer ran; baselines are
    neither rows nor the best."""
    scores: dict[tuple, dict[str, float]] = defaultdict(dict)
    for row in rows:
        if row["role"] != "baseline" and row.get("test_acc_mean") is not None:
            scores[task_key(row)][row["optimizer"]] = 100 * row["test_acc_mean"]
    gaps: dict[str, list[float]] = defaultdict(list)
    for task_scores in scores.values():
        best = max(task_scores.values())
        for label, value in task_scores.items():
            gaps[label].append(best - value)
    return {label: profile(values, len(scores), taus, tau_max) for label, values in gaps.items()}


def gain_strata(accuracies: Mapping[tuple, Mapping], tasks: Sequence[tuple], label: str, baseline: str | None) -> list[np.ndarray]:
    """Per task the optimizer ran beside the baseline: its gain on each shared training set, in
    points (stats.group_test_accuracies keyed by task + (label,)); [] without a baseline."""
    if baseline is None:
        return []
    gains = []
    for task in tasks:
        differences = stats.per_set_differences(accuracies.get(task + (label,), {}), accuracies.get(task + (baseline,), {}))
        if differences.size:
            gains.append(100 * differences)
    return gains


def fit_share(rows: Iterable[Mapping]) -> dict[str, Any]:
    """Of the networks an optimizer trained in its cells (rows' candidates: up to the last one kept,
    tuning trials aside), how many fit the training set exactly, pooled over every cell, those that
    diverged or ran out of budget included: its interpolation rate, reported, not hidden."""
    fit = trained = 0
    for row in rows:
        fit += row["models"]
        trained += row.get("candidates") or 0
    return {"networks_fit": fit, "networks_trained": trained, "fit_share": fit / trained if trained else None}


def clear_gains(rows: Iterable[Mapping]) -> dict[str, int]:
    """On how many of its tasks an optimizer's gain over the baseline has its whole interval above
    zero (its interpolators beat the random ones there) and on how many below (worse than
    random): the rows' own per-task intervals, counted."""
    above = below = 0
    for row in rows:
        low, high = row.get("gain_ci_low"), row.get("gain_ci_high")
        above += low is not None and low > 0
        below += high is not None and high < 0
    return {"tasks_above_zero": above, "tasks_below_zero": below}


def across_tasks(
    rows: Sequence[Mapping],
    networks: list[dict],
    baseline: str | None,
    settings: BootstrapSettings,
    reference: str | None = REFERENCE_OPTIMIZER,
) -> dict[str, Any]:
    """The across-task record: settings, and per optimizer its gains' mean and IQM with intervals,
    P(improvement) over `reference`, its performance profile, its interpolation rate (fit_share)
    and the tasks where its gain is clearly above or below zero (clear_gains); sorted by IQM (best
    first)."""
    accuracies = stats.group_test_accuracies(networks)
    tasks = sorted({task_key(r) for r in rows if r.get("test_acc_mean") is not None})
    labels = sorted({r["optimizer"] for r in rows if r["role"] != "baseline"})
    reference = reference if reference in labels else None
    profiles = performance_profiles(rows)
    optimizers = []
    for label in labels:
        gains = gain_strata(accuracies, tasks, label, baseline)
        shares = []
        for task in tasks:
            sets = accuracies.get(task + (label,), {})
            if reference is not None and label != reference:
                found = stats.improvement_shares(sets, accuracies.get(task + (reference,), {}))
                if found:
                    shares.append(np.array(list(found.values())))
        entry: dict[str, Any] = {
            "optimizer": label,
            "tasks": len(gains),
            "training_sets": sum(len(g) for g in gains),
            "single_set_tasks": sum(len(g) == 1 for g in gains),
            "gain_mean": None, "gain_iqm": None,
            "gain_mean_ci_low": None, "gain_mean_ci_high": None,
            "gain_iqm_ci_low": None, "gain_iqm_ci_high": None,
            "prob_improvement": None, "prob_improvement_ci_low": None, "prob_improvement_ci_high": None,
            "prob_improvement_tasks": len(shares),
            "profile": None, "profile_area": None, "profile_tau_all": None,
        }  # fmt: skip
        entry.update(fit_share(row for row in rows if row["optimizer"] == label))
        entry.update(clear_gains(row for row in rows if row["optimizer"] == label))
        if gains:
            entry.update(gain_summary(gains, settings, (label, baseline)))
        if shares:
            entry.update(improvement_summary(shares, settings, (label, reference)))
        entry.update(profiles.get(label, {}))
        optimizers.append(entry)
    optimizers.sort(
        key=lambda e: (e["gain_iqm"] is None, -(e["gain_iqm"] or 0.0), -(e["profile_area"] or 0.0), e["optimizer"])
    )
    return {
        "baseline": baseline,
        "reference_optimizer": reference,
        "tasks": len(tasks),
        "profile_taus": list(PROFILE_TAUS),
        "profile_tau_max": PROFILE_TAU_MAX,
        "confidence": settings.confidence,
        "resamples": settings.resamples,
        "seed": settings.seed,
        "method": "stratified percentile bootstrap (training sets within each task)",
        "optimizers": optimizers,
    }


def by_architecture(
    rows: Sequence[Mapping], networks: list[dict], baseline: str | None, settings: BootstrapSettings
) -> dict[str, Any] | None:
    """How the across-task ranking moves with the architecture (width, depth, family): per
    architecture, each optimizer's IQM gain over its tasks with the stratified interval (as
    across_tasks, from a stream of its own: the architecture is part of its identity) and its
    rank among the optimizers there (1 = best IQM, ties share their mean rank); and Spearman's
    correlation of the IQM gains between every two architectures, over the optimizers both ran
    (a point estimate: ranks of estimates whose intervals overlap move by chance too). None with
    fewer than two architectures with gains (the baseline ran there too) or no baseline."""
    if baseline is None:
        return None
    tasks = sorted({task_key(r) for r in rows if r.get("test_acc_mean") is not None})
    architectures = list(dict.fromkeys(task[3] for task in tasks))
    if len(architectures) < 2:
        return None
    accuracies = stats.group_test_accuracies(networks)
    labels = sorted({r["optimizer"] for r in rows if r["role"] != "baseline"})
    entries: dict[str, dict[str, dict[str, Any]]] = {label: {} for label in labels}
    for architecture in architectures:
        own = [task for task in tasks if task[3] == architecture]
        for label in labels:
            gains = gain_strata(accuracies, own, label, baseline)
            if gains:
                summary = gain_summary(gains, settings, (label, baseline, architecture))
                entries[label][architecture] = {
                    "tasks": len(gains),
                    **{key: summary[key] for key in ("gain_iqm", "gain_iqm_ci_low", "gain_iqm_ci_high")},
                }
        ranked = [label for label in labels if architecture in entries[label]]
        for label, rank in zip(ranked, average_ranks([-entries[label][architecture]["gain_iqm"] for label in ranked])):
            entries[label][architecture]["rank"] = float(rank)
    architectures = [a for a in architectures if any(a in entries[label] for label in labels)]  # those with gains
    if len(architectures) < 2:
        return None
    correlations = []
    for i, first in enumerate(architectures):
        for second in architectures[i + 1 :]:
            both = [label for label in labels if first in entries[label] and second in entries[label]]
            rho = spearman([entries[label][first]["gain_iqm"] for label in both], [entries[label][second]["gain_iqm"] for label in both])
            correlations.append({"architectures": [first, second], "optimizers": len(both), "spearman": rho})
    return {
        "baseline": baseline,
        "architectures": architectures,
        "confidence": settings.confidence,
        "optimizers": [{"optimizer": label, "by_architecture": entries[label]} for label in labels],
        "rank_correlations": correlations,
    }
