"""The built-in file formats of a leaderboard by name, each a ReporterSpec: what `leaderboard
--format` prints and what write_leaderboard writes. Plugins add formats through the
`benchsuite_reporters` hook (builtins/reporters.py registers these the same way); published
folders are written with the built-ins only, so they do not depend on what a publisher installed."""

from __future__ import annotations

from collections.abc import Sequence

from benchsuite.records import ReporterSpec
from benchsuite.reporting.csv_table import to_csv
from benchsuite.reporting.html_page import to_html
from benchsuite.reporting.json_rows import to_json
from benchsuite.reporting.latex import to_latex
from benchsuite.reporting.markdown import to_markdown

Figures = Sequence[tuple[str, bytes]]  # (caption, PNG bytes) for formats that embed figures


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


REPORTERS: dict[str, ReporterSpec] = {
    reporter.name: reporter
    for reporter in (
        ReporterSpec(name="md", suffix="md", render=_markdown, description="Markdown table"),
        ReporterSpec(name="csv", suffix="csv", render=_csv, description="one row per leaderboard row"),
        ReporterSpec(name="json", suffix="json", render=_json, description="the rows as JSON"),
        ReporterSpec(name="latex", suffix="tex", render=_latex, description="a LaTeX table for papers"),
        ReporterSpec(name="html", suffix="html", render=_html, description="a page with the figures"),
    )
}
