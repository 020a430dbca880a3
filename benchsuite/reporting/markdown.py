"""The leaderboard as Markdown: the rows, the method notes, the cross-task aggregate (and by
architecture), ranking and win rates, and the paired comparisons (the last four when the rows are LeaderboardRows)."""

from __future__ import annotations

from collections.abc import Sequence

from benchsuite.escaping import markdown_cell, markdown_text
from benchsuite.reporting.display import (
    TEXT_COLUMNS,
    aggregate_display,
    aggregate_notes,
    architecture_display,
    architecture_notes,
    comparison_display,
    display_rows,
    method_notes,
    metric_display,
    metric_note,
    ranking_display,
    single_task_note,
    win_rate_display,
)
from benchsuite.reporting.formatting import task_count


def markdown_table(shown: Sequence[dict[str, str]]) -> list[str]:
    """Lines of a Markdown table of display rows (text columns left-aligned, numbers right)."""
    headers = list(shown[0])
    lines = ["| " + " | ".join(markdown_cell(h) for h in headers) + " |"]
    lines.append("|" + "|".join("---" if h in TEXT_COLUMNS else "---:" for h in headers) + "|")
    for row in shown:
        lines.append("| " + " | ".join(markdown_cell(row[h]) for h in headers) + " |")
    return lines


def to_markdown(rows: Sequence[dict], title: str = "Leaderboard") -> str:
    shown = display_rows(rows)
    lines = [f"# {markdown_text(title)}", ""]
    lines.append(
        "Mean test accuracy of interpolating networks (mean over training sets of per-set means, with "
        "its bootstrap interval and the std of the per-set means); gain in percentage points over the "
        "random-interpolator baseline on the same training sets, with its interval."
    )
    lines.append("")
    if not shown:
        return "\n".join(lines + ["(no finished cells)", ""])
    lines += markdown_table(shown)
    lines.append("")
    lines += [f"- {note}" for note in method_notes(rows)]
    diagnostics = metric_display(rows)
    if diagnostics:
        lines += ["", "## Diagnostics", "", metric_note(rows), ""]
        lines += markdown_table(diagnostics)
    ranking = getattr(rows, "ranking", None)
    if ranking and task_count(rows) > 1:
        lines += ["", "## Across tasks", ""]
        lines += aggregate_lines(getattr(rows, "aggregate", None))
        lines += architecture_lines(rows)
        lines += ["Rank by mean test accuracy on each task (1 = best), averaged over tasks.", ""]
        lines += markdown_table(ranking_display(ranking))
        lines += [
            "",
            "Win rate: share of shared tasks on which the row beats the column (ties half).",
            "",
        ]
        lines += markdown_table(win_rate_display(rows.win_rates))
    elif ranking:
        lines += ["", single_task_note()]
    comparisons = getattr(rows, "comparisons", None)
    if comparisons:
        lines += ["", "## Paired comparisons", ""]
        lines.append(
            "Every pair within a task, on the training sets both have: difference of means with its "
            "paired bootstrap interval, probability of improvement, sign-flip p-value and Holm's "
            "correction across all comparisons below."
        )
        lines.append("")
        lines += markdown_table(comparison_display(comparisons, rows))
    return "\n".join(lines) + "\n"


def aggregate_lines(aggregate: dict | None) -> list[str]:
    """The across-task table with its definitions, as Markdown lines ([] without optimizers)."""
    if not aggregate or not aggregate["optimizers"]:
        return []
    lines = ["Gain over the baseline and performance profile, aggregated over tasks:", ""]
    lines += markdown_table(aggregate_display(aggregate))
    return lines + [""] + [f"- {markdown_text(note)}" for note in aggregate_notes(aggregate)] + [""]


def architecture_lines(rows: Sequence[dict]) -> list[str]:
    """The by-architecture table (aggregate.by_architecture) with its notes, as Markdown lines;
    [] for rows of one architecture or without LeaderboardRows."""
    record = getattr(rows, "by_architecture", None)
    if not record:
        return []
    lines = ["By architecture: the gain over the baseline on each architecture's tasks, and how the ranking moves:", ""]
    lines += markdown_table(architecture_display(record, getattr(rows, "aggregate", None)))
    return lines + [""] + [f"- {markdown_text(note)}" for note in architecture_notes(record)] + [""]
