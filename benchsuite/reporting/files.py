"""A result folder's leaderboard files, written through REPORTERS (rendering stays with the caller:
the runner returns rows and writes only the database)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from benchsuite.records import ReporterSpec
from benchsuite.reporting.json_rows import statistics_json
from benchsuite.reporting.reporters import REPORTERS, Figures


def write_leaderboard(
    rows: Sequence[dict],
    out: Path,
    title: str = "Leaderboard",
    formats: Sequence[str] = tuple(REPORTERS),
    figures: Figures | None = None,
    reporters: Mapping[str, ReporterSpec] = REPORTERS,
) -> list[Path]:
    """Write leaderboard.<suffix> for each of `formats` (names in `reporters`, the built-ins by
    default) into `out`; the paths.

    LeaderboardRows also get statistics.json (comparisons, ranking, win rates, the across-task
    aggregate, bootstrap settings).
    `figures` are (caption, PNG bytes) pairs to embed in the HTML page.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in formats:
        if name not in reporters:
            raise ValueError(f"no leaderboard format {name!r}; valid: {', '.join(reporters)}")
        reporter = reporters[name]
        path = out / f"leaderboard.{reporter.suffix}"
        path.write_text(reporter.render(rows, title=title, figures=figures))
        written.append(path)
    if hasattr(rows, "comparisons"):
        path = out / "statistics.json"
        path.write_text(statistics_json(rows))
        written.append(path)
    return written
