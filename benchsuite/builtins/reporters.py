"""The built-in leaderboard formats (benchsuite.reporting.reporters), registered like a plugin's,
so a plugin cannot take one of their names."""

from __future__ import annotations

from benchsuite import hookimpl


@hookimpl
def benchsuite_reporters():
    from benchsuite.reporting.reporters import REPORTERS

    return list(REPORTERS.values())
