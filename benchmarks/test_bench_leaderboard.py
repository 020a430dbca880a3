"""Leaderboard statistics at quickstart scale (960 networks): bootstraps, paired tests, ranks.

Was a wall-clock assertion in tests/test_statistics.py; a time belongs in a benchmark, where the
machine and its load are reported beside it, not in a test that flakes under load.
"""

from __future__ import annotations

import sys
from pathlib import Path

from benchsuite.leaderboard import build_leaderboard
from benchsuite.store import Store

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from stored_results import make_results


def test_leaderboard_statistics_at_quickstart_scale(benchmark, tmp_path):
    folder = make_results(tmp_path / "qs", seeds=(200, 201), models=20)
    with Store(folder / "results.sqlite") as store:
        cells, networks, runs = store.cells(), store.network_rows(), store.runs()
    built = benchmark(build_leaderboard, cells, networks, "gnc", runs=runs)
    assert len(built) == 24 and len(built.comparisons) == 24
    benchmark.extra_info["networks"] = len(networks)
