"""The file formats of a leaderboard by name, each one uniform callable: what `leaderboard
--format` prints and what write_leaderboard writes (a plugin hook can add to REPORTERS later)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from benchsuite.reporting.csv_table import to_csv
from benchsuite.reporting.html_page import to_html
from benchsuite.reporting.json_rows import to_json
from benchsuite.reporting.latex import to_latex
from benchsuite.reporting.markdown import to_markdown

Figures = Sequence[tuple[str, bytes]]  # (caption, PNG bytes) for formats that embed figures


@dataclass(frozen=True)
class Reporter:
    """One output format: its `name`, the `suffix` of its file (leaderboard.<suffix>) and
    `render(rows, title=..., figures=...) -> str`; formats ignore what they do not show."""

    name: str
    suffix: str
    render: Callable[..., str]


def _markdown(rows: Sequence[dict], title: str = "Leaderboard", figures: Figures | None = None) -> str:
    return to_markdown(rows, title)


def _csv(rows: Sequence[dict], title: str = "Leaderboard", figures: Figures | None = None) -> str:
    return to_csv(rows)


def _json(rows: Sequence[dict], title: str = "Leaderboard", figures: Figures | None = None) -> str:
    return to_json(rows)


def _latex(rows: Sequence[dict], title: str = "Leaderboard", figures: Figures | None = None) -> str:
    return to_latex(rows, title)


def _html(rows: Sequence[dict], title: str = "Leaderboard", figures: Figures | None = None) -> str:
    return to_html(rows, title, figures=figures)


REPORTERS: dict[str, Reporter] = {
    reporter.name: reporter
    for reporter in (
        Reporter("md", "md", _markdown),
        Reporter("csv", "csv", _csv),
        Reporter("json", "json", _json),
        Reporter("latex", "tex", _latex),
        Reporter("html", "html", _html),
    )
}
