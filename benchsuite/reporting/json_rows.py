"""The leaderboard as JSON: the rows as they are, and statistics.json for what LeaderboardRows
carries besides them (comparisons, ranking, win rates, the across-task aggregate and its
split by architecture, bootstrap settings)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any


def to_json(rows: Sequence[dict]) -> str:
    return json.dumps([dict(r) for r in rows], indent=2, allow_nan=False) + "\n"


def statistics_record(rows: Sequence[dict]) -> dict[str, Any]:
    """What LeaderboardRows carries besides the rows, as one JSON-able record."""
    settings = getattr(rows, "settings", None)
    return {
        "reference_baseline": getattr(rows, "reference_baseline", None),
        "bootstrap": settings.as_dict() if settings is not None else None,
        "comparisons": list(getattr(rows, "comparisons", [])),
        "ranking": list(getattr(rows, "ranking", [])),
        "win_rates": getattr(rows, "win_rates", None),
        "aggregate": getattr(rows, "aggregate", None),
        "by_architecture": getattr(rows, "by_architecture", None),
    }


def statistics_json(rows: Sequence[dict]) -> str:
    """statistics.json: statistics_record as text."""
    return json.dumps(statistics_record(rows), indent=2, allow_nan=False) + "\n"
