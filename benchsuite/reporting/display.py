"""What a person reads, shared by the text formats: the columns of each table, formatted once,
and the sentences that say how every interval and p-value was obtained."""

from __future__ import annotations

from collections.abc import Sequence

from benchsuite.reporting.formatting import (
    MISSING,
    confidence_label,
    interval,
    metric_interval,
    number,
    p_value,
    percent,
    signed,
    significant,
    task_label,
)

TEXT_COLUMNS = ("task", "architecture", "optimizer", "method", "A", "B", "family", "metric")  # left-aligned


def display_rows(rows: Sequence[dict]) -> list[dict[str, str]]:
    """The columns a person reads, formatted once for every text renderer."""
    ci = confidence_label(rows)
    shown = []
    for row in rows:
        found = f"{row['models']}" + (
            "" if row["models"] >= row["models_requested"] else f"/{row['models_requested']}"
        )
        test_ci = interval(row.get("test_acc_ci_low"), row.get("test_acc_ci_high"))
        gain_ci = interval(row.get("gain_ci_low"), row.get("gain_ci_high"), scale=1, signed=True)
        shown.append(
            {
                "task": task_label(row),
                "N": str(row["n_train"]),
                "architecture": row["architecture"],
                "optimizer": row["optimizer"]
                + (" (baseline)" if row["role"] == "baseline" else "")
                + (" (unreliable)" if row.get("unreliable") else "")
                + ended(row),
                f"test acc % [{ci}]": f"{percent(row['test_acc_mean'])} {test_ci}".strip(),
                "± std": percent(row["test_acc_std"]),
                f"gain pp [{ci}]": f"{signed(row['gain_pp'])} {gain_ci}".strip(),
                "P(better)": number(row.get("prob_improvement"), 2),
                "p (Holm)": p_value(row.get("p_value_holm")),
                "-log2 P(fit)": number(row["neg_log2_p_fit"], 2)
                + (f" ± {row['neg_log2_p_fit_se']:.2f}" if row.get("neg_log2_p_fit_se") is not None else ""),
                "networks": found,
                "candidates": number(row["candidates"]),
                "seconds": number(row["seconds"]),
                "tied fits %": percent(row.get("tied_fit_share")),
                "tied test %": percent(row.get("tied_test_share")),
            }
        )
    return shown


def ended(row: dict) -> str:
    """' (2 diverged, 1 timed out)' for a row with cells that ended otherwise than ok."""
    parts = [f"{row[key]} {words}" for key, words in (("diverged", "diverged"), ("timed_out", "timed out")) if row.get(key)]
    return f" ({', '.join(parts)})" if parts else ""


def comparison_display(
    comparisons: Sequence[dict], rows: Sequence[dict] = ()
) -> list[dict[str, str]]:
    """Paired comparisons (A against B on one task) as the columns a person reads."""
    ci = confidence_label(rows)
    return [
        {
            "task": task_label(c),
            "N": str(c["n_train"]),
            "architecture": c["architecture"],
            "A": c["optimizer_a"],
            "B": c["optimizer_b"],
            "sets": str(c["training_sets"]),
            f"A − B pp [{ci}]": f"{signed(c['difference_pp'])} {interval(c['difference_ci_low'], c['difference_ci_high'], 1, True)}".strip(),
            "P(A > B)": number(c["prob_improvement"], 2),
            "p": p_value(c["p_value"]),
            "p (Holm)": p_value(c.get("p_value_holm")),
        }
        for c in comparisons
    ]


def ranking_display(ranking: Sequence[dict]) -> list[dict[str, str]]:
    """The cross-task ranking: mean rank, tasks and first places per optimizer."""
    return [
        {
            "optimizer": r["optimizer"],
            "mean rank": f"{r['mean_rank']:.2f}",
            "tasks": str(r["tasks"]),
            "first places": str(r["first_places"]),
        }
        for r in ranking
    ]


def win_rate_display(win_rates: dict) -> list[dict[str, str]]:
    """The win-rate matrix, one row per optimizer, one column per opponent."""
    labels = win_rates["optimizers"]
    return [
        {"optimizer": a, **{b: ("—" if v is None else f"{v:.2f}") for b, v in zip(labels, line)}}
        for a, line in zip(labels, win_rates["matrix"])
    ]


def method_notes(rows: Sequence[dict]) -> list[str]:
    """Plain sentences saying how every interval and p-value was obtained."""
    first = next((r for r in rows if r.get("bootstrap_resamples")), None)
    if first is None:
        return status_notes(rows)
    sets = sorted({r["training_sets"] for r in rows if r.get("p_value") is not None})
    notes = [
        (
            f"Intervals: {100 * first['confidence']:g}% percentile bootstrap, {first['bootstrap_resamples']} "
            f"resamples of training sets and then of networks within each (seed {first['bootstrap_seed']}); "
            "gains resample the same training sets for the optimizer and the baseline."
        ),
        (
            "P(better): probability that a random network of the optimizer has a higher test accuracy than "
            "a random one of the baseline on the same training set (ties count half); ×100 it is the mean "
            "percentile of the optimizer's networks in the baseline's distribution."
        ),
    ]
    if any(r["role"] == "optimizer" and r.get("candidates") for r in rows):
        notes.append(
            "Candidates: for a baseline, the networks it drew from the prior; for an optimizer, the networks it "
            "trained, up to the last one kept (tuning trials aside): networks / candidates is the share that fit."
        )
    fewest = min((r["training_sets"] for r in rows if r.get("training_sets")), default=0)
    if 0 < fewest < 5:
        notes.append(
            f"With {fewest} training set(s) per row, intervals are rough (the bootstrap can only recombine "
            "those sets); suites with more training-set seeds give intervals to rely on."
        )
    if any(r.get("neg_log2_p_fit_se") is not None for r in rows):
        notes.append(
            "-log2 P(fit) ± its standard error: the sampler estimated P(fit) (subset simulation, "
            "docs/samplers.md) instead of counting found / tried as G&C does."
        )
    reasons = sorted({reason for r in rows for reason in r.get("unreliable") or []})
    if reasons:
        count = sum(1 for r in rows if r.get("unreliable"))
        notes.append(
            f"{count} row(s) marked unreliable: the sampler's diagnostics failed a threshold "
            f"(benchsuite.leaderboard.RELIABILITY): {'; '.join(reasons)}."
        )
    notes += status_notes(rows)
    if any(r.get("tied_fit_share") is not None for r in rows):
        notes.append(
            "Ties: tied fits % is the share of networks with a training point whose two logits were "
            "exactly equal (the suite's tie_rule decided it: argmax gives it to class 0, strict counts "
            "it wrong); tied test % the share of their test predictions with equal logits."
        )
    if sets:
        smallest = ", ".join(f"{2 / 2**n:.3g} with {n} training sets" for n in sets)
        notes.append(
            "p: two-sided paired sign-flip test on per-training-set mean differences (exact up to 16 "
            f"training sets), Holm-corrected across the rows; smallest possible p: {smallest}."
        )
    return notes


def metric_names(rows: Sequence[dict]) -> list[str]:
    """The per-network metrics the rows carry, in the order the rows list them."""
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row.get("metrics") or {}))
    return list(names)


def metric_display(rows: Sequence[dict], intervals: bool = True) -> list[dict[str, str]]:
    """The diagnostics table: one line per leaderboard row with metrics, a column per metric
    holding its mean (three significant digits) and, with `intervals`, its interval."""
    names = metric_names(rows)
    ci = confidence_label(rows)
    shown = []
    for row in rows:
        if not row.get("metrics"):
            continue
        line = {
            "task": task_label(row),
            "N": str(row["n_train"]),
            "architecture": row["architecture"],
            "optimizer": row["optimizer"] + (" (baseline)" if row["role"] == "baseline" else ""),
        }
        for name in names:
            summary = row["metrics"].get(name) or {}
            text = significant(summary.get("mean"))
            if intervals:
                text = f"{text} {metric_interval(summary.get('ci_low'), summary.get('ci_high'))}".strip()
            line[f"{name} [{ci}]" if intervals else name] = text
        shown.append(line)
    return shown


def metric_note(rows: Sequence[dict]) -> str:
    """How the diagnostics table's numbers were obtained."""
    first = next((r for r in rows if r.get("bootstrap_resamples")), {})
    return (
        "Diagnostics (docs/diagnostics.md): each metric's mean over training sets of the per-set mean over "
        "networks, with its percentile bootstrap interval (training sets, then networks"
        + (f"; {first['bootstrap_resamples']} resamples" if first else "")
        + "); networks whose value is undefined (NaN, such as init_distance of a random interpolator) are "
        "left out, and — marks a row with none."
    )


def status_notes(rows: Sequence[dict]) -> list[str]:
    """Sentences on cells that ended otherwise than ok (diverged, timed out), if any."""
    notes = []
    diverged = sum(r.get("diverged") or 0 for r in rows)
    timed_out = sum(r.get("timed_out") or 0 for r in rows)
    diverged_networks = sum(r.get("diverged_networks") or 0 for r in rows)
    if diverged or diverged_networks:
        notes.append(
            f"Diverged: {diverged} cell(s) where the optimizer found no interpolating network and its loss "
            f"became NaN or inf (marked \"diverged\"); {diverged_networks:,} network(s) diverged in all. A "
            "diverged network never fits, so it is never counted as an interpolator."
        )
    if timed_out:
        notes.append(
            f"Timed out: {timed_out} cell(s) stopped at the suite's max_seconds_per_cell (marked \"timed "
            "out\"); what they had found is not counted, so their rows rest on fewer training sets."
        )
    return notes


def clear_tasks(entry: dict) -> str:
    """"a / b": the tasks on which an across-task entry's gain interval lies wholly above / below
    zero ("— / —" for an aggregate written before the count existed)."""
    return f"{entry.get('tasks_above_zero', '—')} / {entry.get('tasks_below_zero', '—')}"


def aggregate_display(aggregate: dict, compact: bool = False) -> list[dict[str, str]]:
    """The across-task table (benchsuite.aggregate), one line per optimizer, best IQM first:
    mean and IQM gain with intervals, P(improvement) over the reference optimizer, the profile.
    `compact` keeps what a terminal has room for (the profile at 1 point only, no task counts);
    both show the interpolation rate (fit %)."""
    ci = f"{100 * aggregate['confidence']:g}% CI"
    reference = aggregate.get("reference_optimizer")
    taus = aggregate["profile_taus"]
    shown = []
    for e in aggregate["optimizers"]:
        line = {"optimizer": e["optimizer"]}
        if not compact:
            line["tasks"] = str(e["tasks"])
            if "tasks_above_zero" in e:
                line["tasks > 0 / < 0"] = clear_tasks(e)
        line["fit %"] = percent(e.get("fit_share"))
        line[f"mean gain pp [{ci}]"] = f"{signed(e['gain_mean'])} {interval(e['gain_mean_ci_low'], e['gain_mean_ci_high'], 1, True)}".strip()
        line[f"IQM gain pp [{ci}]"] = f"{signed(e['gain_iqm'])} {interval(e['gain_iqm_ci_low'], e['gain_iqm_ci_high'], 1, True)}".strip()
        if reference is not None:
            text = number(e["prob_improvement"], 2)
            if e["prob_improvement_ci_low"] is not None and not compact:
                text += f" [{e['prob_improvement_ci_low']:.2f}, {e['prob_improvement_ci_high']:.2f}]"
            line[f"P(> {reference})" + ("" if compact else f" [{ci}]")] = text
        values = e.get("profile") or [None] * len(taus)
        for tau, value in zip(taus, values):
            if not compact or tau == 1.0:
                line[f"profile τ={tau:g}"] = number(value, 2)
        if not compact:
            line[f"profile area (τ ≤ {aggregate['profile_tau_max']:g})"] = number(e.get("profile_area"), 2)
            line["τ for all tasks"] = number(e.get("profile_tau_all"), 1)
        shown.append(line)
    return shown


def aggregate_notes(aggregate: dict) -> list[str]:
    """Plain sentences defining the across-task table, and what it cannot show on this data."""
    entries = aggregate["optimizers"]
    reference = aggregate.get("reference_optimizer")
    notes = [
        (
            f"Gain: per (task, training set), the optimizer's mean test accuracy minus {aggregate['baseline'] or 'the baseline'}'s, in "
            "points. Mean gain: the mean over tasks of each task's mean gain; IQM: the mean of the middle half of all "
            "(task, training set) gains pooled (25% trimmed from each end, as rliable's). Rows sorted by IQM."
        ),
        (
            f"Intervals: {100 * aggregate['confidence']:g}% stratified percentile bootstrap, {aggregate['resamples']} resamples "
            f"of training sets within each task, independently per task (seed {aggregate['seed']}); networks are not "
            "resampled here, each training set's mean is one unit."
        ),
    ]
    if reference is not None:
        notes.append(
            f"P(> {reference}): probability that a random network of the optimizer beats a random one of {reference} on "
            "the same training set (ties half), averaged over training sets within a task and then over tasks, "
            "with the same stratified interval."
        )
    if any("tasks_above_zero" in e for e in entries):
        notes.append(
            "tasks > 0 / < 0: the tasks on which the optimizer's gain has its whole interval (the leaderboard row's) above "
            "zero, its interpolators beating the random ones there, and those with it below zero, worse than random."
        )
    if any(e.get("fit_share") is not None for e in entries):
        notes.append(
            "fit %: of the networks the optimizer trained in its cells (tuning trials aside), the share that fit the "
            "training set exactly: the rows' networks over candidates, pooled over all its cells, those that diverged "
            "or ran out of budget included."
        )
    notes.append(
        f"Performance profile (Dolan and Moré, as in AlgoPerf): the share of the {aggregate['tasks']} tasks on which the "
        "optimizer's mean test accuracy is within τ points of the best optimizer's there (baselines excluded); the "
        f"area is its integral over τ in [0, {aggregate['profile_tau_max']:g}] divided by {aggregate['profile_tau_max']:g} "
        "(1 = best on every task); τ for all tasks: where it reaches 1 (the optimizer's largest gap to the best)."
    )
    with_gains = [e for e in entries if e["tasks"]]
    if with_gains and all(e["single_set_tasks"] == e["tasks"] for e in with_gains):
        notes.append(
            "One training set per task: the stratified bootstrap has nothing to resample, so no intervals are shown; "
            "suites with more training-set seeds give them."
        )
    elif any(e["single_set_tasks"] for e in with_gains):
        notes.append(
            "Some tasks have one training set: they add no sampling variation to the intervals, which are too narrow "
            "by that much."
        )
    elif with_gains and max(e["training_sets"] / e["tasks"] for e in with_gains) < 5:
        fewest = min(e["training_sets"] // e["tasks"] for e in with_gains)
        notes.append(
            f"With as few as {fewest} training sets per task, the bootstrap can only recombine them: intervals are rough "
            "and too narrow (simulated 95% intervals cover about 70-75% of the time with 2 per task, 88% with 4: "
            "docs/protocol.md)."
        )
    if len({e["tasks"] for e in entries}) > 1:
        notes.append("Optimizers ran different numbers of tasks (column tasks): their aggregates are not over the same tasks.")
    return notes


def single_task_note() -> str:
    """What the across-task section says when there is one task only."""
    return "Across tasks: one task only, so there is nothing to aggregate (no ranks, IQM or performance profile)."


def architecture_entries(record: dict, aggregate: dict | None = None) -> list[dict]:
    """aggregate.by_architecture's optimizers in the across-task table's order (`aggregate`, best
    IQM first), then by name."""
    position = {e["optimizer"]: i for i, e in enumerate((aggregate or {}).get("optimizers", []))}
    return sorted(record["optimizers"], key=lambda e: (position.get(e["optimizer"], len(position)), e["optimizer"]))


def architecture_gain(found: dict | None) -> str:
    """One architecture's IQM gain with its interval ("+14.0 [+12.7, +15.4]"), "—" where the
    optimizer has none there."""
    if found is None:
        return MISSING
    return f"{signed(found['gain_iqm'])} {interval(found['gain_iqm_ci_low'], found['gain_iqm_ci_high'], 1, True)}".strip()


def ranks_shown(record: dict) -> bool:
    """Whether the by-architecture record ranks anything: two or more optimizers."""
    return len(record["optimizers"]) > 1


def architecture_display(record: dict, aggregate: dict | None = None) -> list[dict[str, str]]:
    """aggregate.by_architecture as one line per optimizer: per architecture its IQM gain with the
    interval and (with two or more optimizers) its rank there; in the across-task table's order
    (architecture_entries)."""
    ci = f"{100 * record['confidence']:g}% CI"
    shown = []
    for e in architecture_entries(record, aggregate):
        line = {"optimizer": e["optimizer"]}
        for architecture in record["architectures"]:
            found = e["by_architecture"].get(architecture)
            line[f"{architecture}: IQM gain pp [{ci}]"] = architecture_gain(found)
            if ranks_shown(record):
                line[f"{architecture}: rank"] = MISSING if found is None else f"{found['rank']:g}"
        shown.append(line)
    return shown


def architecture_notes(record: dict) -> list[str]:
    """Plain sentences defining the by-architecture table and giving its rank correlations (those
    defined: three or more optimizers whose gains differ)."""
    notes = [
        f"Per architecture: the IQM of the optimizer's (task, training set) gains over {record['baseline']} on that "
        f"architecture's tasks, with its {100 * record['confidence']:g}% stratified interval (as in the across-task table)"
        + ("; its rank among the optimizers there (1 = the best IQM; ties share their mean rank)." if ranks_shown(record) else ".")
    ]
    defined = [c for c in record["rank_correlations"] if c["spearman"] is not None]
    if defined:
        pairs = "; ".join(
            f"{c['architectures'][0]} and {c['architectures'][1]} {c['spearman']:.2f} ({c['optimizers']} optimizers)" for c in defined
        )
        notes.append(f"Rank correlation (Spearman) of the IQM gains between architectures: {pairs}.")
    if ranks_shown(record):
        notes.append(
            "Ranks are of point estimates: where neighbours' intervals overlap, a rank that differs between "
            "architectures can be chance; read the intervals."
        )
    return notes
