"""scripts/findings.py, the figures a leaderboard's handwritten reading quotes: run as a maintainer
runs it, on a folder published in this repository, and checked against that folder's own files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "leaderboards" / "zoo-fashion-mnist-lenet"


def findings(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "findings.py"), *args], capture_output=True, text=True, timeout=120)


def test_the_figures_are_the_folders_own():
    result = findings(str(FOLDER))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    statistics = json.loads((FOLDER / "statistics.json").read_text())
    table = sorted(statistics["aggregate"]["optimizers"], key=lambda o: -o["gain_iqm"])
    first = next(line for line in lines if line.startswith("  1 "))
    top = table[0]
    assert first.split()[1] == top["optimizer"]
    assert f"IQM {top['gain_iqm']:+.1f} [{top['gain_iqm_ci_low']:+.1f}, {top['gain_iqm_ci_high']:+.1f}]" in first
    assert f"fit {100 * top['fit_share']:.0f}% ({top['networks_fit']}/{top['networks_trained']})" in first
    assert sum(1 for line in lines if line[:3].strip().isdigit() and " IQM " in line) == len(table)
    rows = json.loads((FOLDER / "leaderboard.json").read_text())
    reaching_zero = [r for r in rows if r["gain_pp"] is not None and r["gain_ci_low"] <= 0]
    start = lines.index("## rows whose gain interval reaches zero")
    assert lines[start + 1 : start + 1 + len(reaching_zero)] == [
        f"    {r['class_names']} N={r['n_train']} {r['architecture']} {r['optimizer']} "
        f"{r['gain_pp']:+.1f} [{r['gain_ci_low']:+.1f}, {r['gain_ci_high']:+.1f}]"
        for r in reaching_zero
    ]
    cost = json.loads((FOLDER / "environment.json").read_text())["cost"]
    assert lines[-1].startswith(f"cost: {cost['total_seconds'] / 3600:.2f} h in all")


def test_a_folder_that_is_no_leaderboard_is_one_line_and_exit_code_2(tmp_path):
    result = findings(str(tmp_path))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == f"{tmp_path}: not a published leaderboard (no statistics.json); usage: python scripts/findings.py LEADERBOARD_FOLDER"
