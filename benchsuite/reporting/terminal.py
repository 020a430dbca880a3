"""The leaderboard on a terminal (rich): one compact table per task and architecture, the
columns that fit the width, gains coloured by whether their interval excludes zero."""

from __future__ import annotations

from collections.abc import Sequence

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from benchsuite.escaping import terminal_text
from benchsuite.reporting.display import (
    TEXT_COLUMNS,
    aggregate_display,
    architecture_entries,
    architecture_gain,
    display_rows,
    method_notes,
    metric_display,
    ranking_display,
    ranks_shown,
    single_task_note,
)
from benchsuite.reporting.formatting import confidence_label, duration, task_count

GROUP_COLUMNS = ("task", "architecture")  # one table per group, named in its title
# Columns a narrow terminal leaves out, last first; task, method, accuracy and gain always stay.
OPTIONAL_TERMINAL_COLUMNS = (
    "P(better)",
    "p (Holm)",
    "-log2 P(fit)",
    "networks",
    "candidates",
    "seconds",
    "tied fits %",
    "tied test %",
)
WIDE = 200


def terminal_headers(shown: Sequence[dict[str, str]], width: int) -> list[str]:
    """The columns that fit `width`, adding optional ones in order of importance while they fit."""

    def needed(header: str) -> int:
        return max(len(header.split(" [")[0]), *(len(row[header]) for row in shown)) + 2

    headers = [h for h in shown[0] if h != "± std" and h not in OPTIONAL_TERMINAL_COLUMNS]
    used = sum(needed(h) for h in headers)
    for header in OPTIONAL_TERMINAL_COLUMNS:
        if used + needed(header) <= width:
            headers.append(header)
            used += needed(header)
    return [h for h in shown[0] if h in headers]


def to_terminal(rows: Sequence[dict], console: Console, title: str = "Leaderboard") -> None:
    """One compact rich table per (task, architecture), so that rows fit a terminal; piped or
    redirected output gets every column (nothing truncates a log file)."""
    shown = display_rows(rows)
    if not shown:
        console.print("(no finished cells)")
        return
    width = console.width if console.is_terminal else max(console.width, WIDE)
    if not console.is_terminal:
        console.width = width  # print(width=) cannot widen past the console's own width
    per_group = [{k: v for k, v in row.items() if k not in GROUP_COLUMNS} for row in shown]
    headers = terminal_headers(per_group, width)
    ci = confidence_label(rows)
    console.print(f"[bold]{escape(terminal_text(title))}[/]  [dim]{escape(f'[a, b]: {ci}; dim rows: baselines')}[/]")
    groups: dict[tuple[str, str], list[tuple[dict, dict]]] = {}
    for row, compact, raw in zip(shown, per_group, rows):
        groups.setdefault((row["task"], row["architecture"]), []).append((compact, raw))
    for (task, architecture), members in groups.items():
        table = Table(
            title=escape(terminal_text(f"{task} · {architecture}")), title_justify="left", header_style="bold",
            box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False,
        )  # fmt: skip
        for header in headers:
            short = header.replace(f" [{ci}]", "")
            if header in TEXT_COLUMNS:
                table.add_column(short, justify="left", overflow="fold")
            else:
                table.add_column(short, justify="right", no_wrap=short != header)
        previous = None
        for compact, raw in members:
            if previous is not None and compact["N"] != previous:
                table.add_section()
            previous = compact["N"]
            style = "dim" if raw["role"] == "baseline" else None
            cells = []
            for header in headers:
                value = escape(terminal_text(compact[header]))  # labels such as "mlp[width=1]" are not rich markup
                if header.startswith("gain") and raw["gain_pp"] is not None:
                    colour = _gain_colour(raw)
                    value = f"[{colour}]{value}[/]" if colour else value
                cells.append(value)
            table.add_row(*cells, style=style)
        console.print(table, width=width)
    hidden = [h for h in per_group[0] if h not in headers and h != "± std"]
    notes = method_notes(rows) + (
        [f"Hidden at this width: {', '.join(hidden)} (see leaderboard.md)."] if hidden else []
    )
    for note in notes:
        console.print(f"[dim]{note}[/]", highlight=False, width=width)
    _diagnostics(rows, console, width)
    ranking = getattr(rows, "ranking", None)
    if ranking and task_count(rows) == 1:
        console.print(f"[dim]{single_task_note()}[/]", highlight=False, width=width)
    if ranking and task_count(rows) > 1:
        _aggregate(getattr(rows, "aggregate", None), console, width)
        _by_architecture(rows, console, width)
    if ranking and len(ranking) > 1 and task_count(rows) > 1:
        summary = Table(
            title="Across tasks (rank by mean test accuracy, 1 = best)", header_style="bold"
        )
        for header in ranking_display(ranking)[0]:
            summary.add_column(header, justify="left" if header == "optimizer" else "right")
        for line in ranking_display(ranking):
            summary.add_row(*(escape(terminal_text(v)) for v in line.values()))
        console.print(summary)


def _aggregate(aggregate: dict | None, console: Console, width: int) -> None:
    """The across-task table, compact (definitions and the full table are in leaderboard.md)."""
    if not aggregate or not aggregate["optimizers"]:
        return
    shown = aggregate_display(aggregate, compact=True)
    ci = f"{100 * aggregate['confidence']:g}% CI"
    table = Table(
        title=escape(terminal_text(f"Across {aggregate['tasks']} tasks: gain over {aggregate['baseline'] or 'the baseline'} (points), best IQM first")),
        title_justify="left", header_style="bold", box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False,
    )  # fmt: skip
    for header in shown[0]:
        short = header.replace(f" [{ci}]", "")
        if header == "optimizer":  # folded, never cut: two labels may share a prefix
            table.add_column(header, justify="left", overflow="fold")
        else:
            table.add_column(escape(terminal_text(short)), justify="right", no_wrap=True)
    for line in shown:
        table.add_row(*(escape(terminal_text(v)) for v in line.values()))
    console.print(table, width=width)
    one_set = all(e["single_set_tasks"] == e["tasks"] for e in aggregate["optimizers"] if e["tasks"])
    intervals = (
        "one training set per task: no intervals (nothing to resample)"
        if one_set
        else f"[a, b]: {ci}, stratified bootstrap over training sets within tasks"
    )
    note = f"fit %: share of the networks trained that fit; {intervals}; profile τ=1: share of tasks within 1 point of the best"
    console.print(f"[dim]{escape(note)} (leaderboard.md defines every column).[/]", highlight=False, width=width)


def _by_architecture(rows: Sequence[dict], console: Console, width: int) -> None:
    """aggregate.by_architecture, compact: per architecture the IQM gain, its interval and the
    rank there in one column (leaderboard.md has the notes and the rank correlations)."""
    record = getattr(rows, "by_architecture", None)
    if not record:
        return
    table = Table(
        title=escape(terminal_text(f"By architecture: IQM gain over {record['baseline']} (points) and rank there")),
        title_justify="left", header_style="bold", box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False,
    )  # fmt: skip
    table.add_column("optimizer", justify="left", overflow="fold")
    for architecture in record["architectures"]:
        table.add_column(escape(terminal_text(architecture)), justify="right", no_wrap=True)
    for e in architecture_entries(record, getattr(rows, "aggregate", None)):
        cells = [e["optimizer"]]
        for architecture in record["architectures"]:
            found = e["by_architecture"].get(architecture)
            rank = f" #{found['rank']:g}" if found is not None and ranks_shown(record) else ""
            cells.append(architecture_gain(found) + rank)
        table.add_row(*(escape(terminal_text(v)) for v in cells))
    console.print(table, width=width)


def _gain_colour(row: dict) -> str | None:
    """Green when the whole interval is above zero, red when below, uncoloured when it straddles."""
    low, high = row.get("gain_ci_low"), row.get("gain_ci_high")
    if low is None or high is None:
        return "green" if row["gain_pp"] > 0 else "red"
    if low > 0:
        return "green"
    if high < 0:
        return "red"
    return None


def _diagnostics(rows: Sequence[dict], console: Console, width: int) -> None:
    """The metrics' means, one table per (task, architecture); intervals are in leaderboard.md."""
    shown = metric_display(rows, intervals=False)
    if not shown:
        return
    groups: dict[tuple[str, str], list[dict]] = {}
    for line in shown:
        groups.setdefault((line["task"], line["architecture"]), []).append(line)
    for (task, architecture), lines in groups.items():
        table = Table(
            title=escape(terminal_text(f"Diagnostics (means; intervals in leaderboard.md): {task} · {architecture}")),
            title_justify="left", header_style="bold", box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False,
        )  # fmt: skip
        headers = [h for h in lines[0] if h not in GROUP_COLUMNS]
        for header in headers:
            table.add_column(escape(terminal_text(header)), justify="left" if header in TEXT_COLUMNS else "right", overflow="fold")
        for line in lines:
            style = "dim" if line["optimizer"].endswith("(baseline)") else None
            table.add_row(*(escape(terminal_text(line[h])) for h in headers), style=style)
        console.print(table, width=width)


def estimate_table(found, name: str, console: Console, workers: int = 1) -> None:
    """`benchsuite estimate`'s answer (a benchsuite.estimate.SuiteEstimate): one row per method
    and architecture, the total (and its wall time on `workers` workers), and what the figures
    rest on."""
    table = Table(title=terminal_text(f"Estimate: {name} on {found.device}"), box=box.SIMPLE_HEAD)
    for header in ("method", "architecture", "cells", "time here", "basis"):
        table.add_column(header, justify="right" if header in ("cells", "time here") else "left", overflow="fold")
    groups = sorted(found.groups(), key=lambda g: -g["seconds"])
    for group in groups:
        bound = "≥ " if "at least" in group["bases"] else ""
        table.add_row(
            escape(terminal_text(group["method"])), escape(terminal_text(group["architecture"])), str(group["cells"]),
            bound + duration(group["seconds"]), ", ".join(group["bases"]),
        )  # fmt: skip
    console.print(table)
    bound = "at least " if found.lower_bound else ""
    total = f"{bound}{duration(found.seconds)} on one process here"
    if workers > 1:
        total += f", {bound}{duration(found.wall_seconds(workers))} of wall time on {workers} workers (cells handed out in the run's order)"
    console.print(
        f"total: {total} ({len(found.costs)} cells; the probes took "
        f"{duration(found.probe_seconds)}). Where a gradient probe could not train every epoch, "
        "every network is assumed to interpolate; G&C's reuse across nested N makes its cells cheaper.",
        markup=False, highlight=False, soft_wrap=True,
    )  # fmt: skip
    if found.busy:
        console.print(f"note: {found.busy}", markup=False, highlight=False, soft_wrap=True)
