"""Numbers and labels formatted one way for every text format, so the formats never disagree."""

from __future__ import annotations

from collections.abc import Sequence

MISSING = "—"  # a value that does not exist (no networks, no baseline to pair with)


def percent(value: float | None) -> str:
    """A share as a percentage with one decimal: 0.8765 -> '87.7'."""
    return MISSING if value is None else f"{100 * value:.1f}"


def signed(value: float | None) -> str:
    """A difference with its sign and one decimal: '+1.2', '-0.4'."""
    return MISSING if value is None else f"{value:+.1f}"


def number(value: float | None, digits: int = 1) -> str:
    """Integers with thousands separators, other numbers with `digits` decimals."""
    if value is None:
        return MISSING
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}f}"


def p_value(value: float | None) -> str:
    """Three decimals, or two significant digits below 0.001."""
    if value is None:
        return MISSING
    return f"{value:.2g}" if value < 0.001 else f"{value:.3f}"


def interval(
    low: float | None, high: float | None, scale: float = 100, signed: bool = False
) -> str:
    """'[low, high]' scaled (100: shares as percentages), '' when either end is missing."""
    if low is None or high is None:
        return ""
    form = "{:+.1f}" if signed else "{:.1f}"
    return f"[{form.format(scale * low)}, {form.format(scale * high)}]"


def significant(value: float | None, digits: int = 3) -> str:
    """A metric of any magnitude with `digits` significant digits: 0.0123, 45.6, 1.23e+04."""
    return MISSING if value is None else f"{value:.{digits}g}"


def metric_interval(low: float | None, high: float | None) -> str:
    """'[low, high]' of a metric with three significant digits, '' when either end is missing."""
    if low is None or high is None:
        return ""
    return f"[{low:.3g}, {high:.3g}]"


def task_label(row: dict) -> str:
    """'dataset a vs b' of a leaderboard or comparison row."""
    a, b = row["classes"]
    return f"{row['dataset']} {a} vs {b}"


def confidence_label(rows: Sequence[dict]) -> str:
    """'95% CI' for the rows' confidence level (95% when the rows carry none)."""
    confidence = next((r.get("confidence") for r in rows if r.get("confidence")), 0.95)
    return f"{100 * confidence:g}% CI"


def task_count(rows: Sequence[dict]) -> int:
    """How many (task, N, architecture) groups the rows cover: a cross-task ranking needs two."""
    return len({(r["dataset"], tuple(r["classes"]), r["n_train"], r["architecture"]) for r in rows})


def duration(seconds: float) -> str:
    """Seconds as a reader plans with them: 40 s, 12 min, 3.5 h, 2.1 days."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
