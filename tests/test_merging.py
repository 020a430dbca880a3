"""`benchsuite merge`: cells of a suite computed elsewhere brought into its folder; real runs on the
bundled digits, real SQLite, a lock held by another process.

The scene it serves: the suite's G&C cells computed in a G&C-only copy of the suite (the same
cell ids and seeds) beside, or before, the suite's own run, then merged into the suite's folder,
which the suite's run then resumes and `publish` takes as the suite's.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from cli_runner import cli
from growing_suites import FIRST, GROWN, rows, suite_file

CELL_QUERY = (
    "SELECT cell_id, seed, n_train, training_set_seed, optimizer, models_found, candidates_tried, epochs, status "
    "FROM cells ORDER BY cell_id"
)
NETWORK_QUERY = "SELECT cell_id, model_index, found_at, train_acc, test_acc, train_ties, test_ties FROM networks ORDER BY cell_id, model_index"
GNC_ONLY = {**GROWN, "name": "grown-gnc", "optimizers": []}  # the suite's G&C cells alone


def run(suite: Path, out: Path) -> None:
    result = cli("run", str(suite), "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr


def runs(folder: Path) -> list[tuple]:
    with sqlite3.connect(folder / "results.sqlite") as db:
        return db.execute("SELECT suite_id, command, environment FROM runs ORDER BY run_id").fetchall()


def without(whole: Path, folder: Path, where: str) -> None:
    """`folder`: the suite's folder as a run stopped before the cells `where` selects leaves it
    (the whole run's folder with those cells taken out)."""
    shutil.copytree(whole, folder)
    with sqlite3.connect(folder / "results.sqlite") as db:
        chosen = f"(SELECT cell_id FROM cells WHERE {where})"
        for table in ("network_metrics", "networks", "cell_estimates", "training_indices", "tuning_trials", "tuning"):
            db.execute(f"DELETE FROM {table} WHERE cell_id IN {chosen}")
        db.execute(f"DELETE FROM cells WHERE {where}")
    assert cli("leaderboard", str(folder), "--format", "json").returncode == 0  # its files as that run left them


def without_baseline(whole: Path, folder: Path) -> None:
    without(whole, folder, "role = 'baseline'")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """`whole`: the suite run into one folder; `gnc`: its G&C-only copy run into another."""
    root = tmp_path_factory.mktemp("merging")
    run(suite_file(root, "grown", GROWN), root / "whole")
    run(suite_file(root, "gnc", GNC_ONLY), root / "gnc")
    assert len(rows(root / "gnc" / "results.sqlite", CELL_QUERY)) == 4
    return root


def merged(out: Path, *sources: Path) -> subprocess.CompletedProcess:
    result = cli("merge", str(out), *map(str, sources))
    assert result.returncode == 0, result.stderr
    return result


def test_baseline_cells_of_a_copy_merge_into_the_suites_folder_which_then_resumes_and_publishes(folders, tmp_path):
    root = folders
    target = tmp_path / "target"
    without_baseline(root / "whole", target)
    assert {row["optimizer"] for row in json.loads((target / "leaderboard.json").read_text())} == {"sgd"}
    suite_id = runs(root / "whole")[-1][0]
    result = merged(target, root / "gnc")
    assert f"{root / 'gnc'}: 4 of its 4 cells added" in result.stderr
    assert "8 of the 8 cells of suite 'grown' finished" in result.stderr
    # the folder now holds what the whole run computed, bit for bit
    for query in (CELL_QUERY, NETWORK_QUERY):
        assert rows(target / "results.sqlite", query) == rows(root / "whole" / "results.sqlite", query)
    # the merge is a run of the folder's suite, after the copy's: the folder stays the suite's
    history = runs(target)
    assert [suite for suite, _, _ in history] == [suite_id, runs(root / "gnc")[0][0], suite_id]
    _, command, environment = history[-1]
    assert command == f"benchsuite merge {target} {root / 'gnc'}"
    assert json.loads(environment)["merged_from"] == str(root / "gnc") and "device" not in json.loads(environment)
    # its leaderboard files were rebuilt with the G&C rows
    assert {row["optimizer"] for row in json.loads((target / "leaderboard.json").read_text())} == {"sgd", "gnc"}
    # the suite resumes into it with nothing to compute, and it publishes as the suite
    again = cli("run", str(suite_file(tmp_path, "grown", GROWN)), "--out", str(target))
    assert again.returncode == 0, again.stderr
    assert "resuming under another version of the suite" in again.stderr and "0 to run" in again.stderr
    assert len(rows(target / "results.sqlite", CELL_QUERY)) == 8
    published = cli("publish", str(target), "--to", str(tmp_path / "board"), "--no-figures")
    assert published.returncode == 0, published.stderr
    readme = (tmp_path / "board" / "README.md").read_text()
    copy_id = runs(root / "gnc")[0][0]
    assert f"suite ids (after the final suite first ran, parts of it run as suites of their own, in this folder or merged in: `{copy_id}`; final: `{suite_id}`)" in readme
    assert "4 of them were computed under another suite id" in readme
    page = (tmp_path / "board" / "leaderboard.html").read_text()
    assert "merged from" in page and json.loads((tmp_path / "board" / "environment.json").read_text())["suite_id"] == suite_id


def test_a_copy_holding_part_of_the_task_list_merges_too(folders, tmp_path):
    """The suite's N = 4 cells (FIRST is the suite without N = 6), run as a suite of their own."""
    root = folders
    target = tmp_path / "target"
    without(root / "whole", target, "n_train = 4")
    run(suite_file(tmp_path, "first", FIRST), tmp_path / "first")
    result = merged(target, tmp_path / "first")
    assert f"{tmp_path / 'first'}: 4 of its 4 cells added" in result.stderr
    for query in (CELL_QUERY, NETWORK_QUERY):
        assert rows(target / "results.sqlite", query) == rows(root / "whole" / "results.sqlite", query)


def test_cells_the_folder_holds_are_kept_and_said_identical_or_not(folders, tmp_path):
    root = folders
    target, copy = tmp_path / "target", tmp_path / "gnc"
    shutil.copytree(root / "whole", target)
    shutil.copytree(root / "gnc", copy)
    before = rows(target / "results.sqlite", NETWORK_QUERY)
    result = merged(target, root / "gnc")
    assert "0 of its 4 cells added, 4 already there (4 identical bit for bit)" in result.stderr
    # a copy whose one network's test accuracy differs in the last bit
    with sqlite3.connect(copy / "results.sqlite") as db:
        cell_id, index, accuracy = db.execute("SELECT cell_id, model_index, test_acc FROM networks ORDER BY cell_id LIMIT 1").fetchone()
        db.execute("UPDATE networks SET test_acc = ? WHERE cell_id = ? AND model_index = ?", (accuracy + 1e-12, cell_id, index))
    result = merged(target, copy)
    assert f"4 already there (3 identical bit for bit; 1 differ, e.g. cell {cell_id}: the folder's kept)" in result.stderr
    assert rows(target / "results.sqlite", NETWORK_QUERY) == before


def refused(out: Path, *sources: Path) -> str:
    """`benchsuite merge OUT SOURCES`: one line, exit code 2, the folder's database untouched."""
    before = (out / "results.sqlite").read_bytes()
    result = cli("merge", str(out), *map(str, sources))
    assert result.returncode == 2, result.stderr
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert (out / "results.sqlite").read_bytes() == before
    return message


def test_cells_of_another_suite_or_other_numerics_or_a_folder_given_twice_are_refused(folders, tmp_path):
    root = folders
    target = tmp_path / "target"
    without_baseline(root / "whole", target)
    other = {**GNC_ONLY, "seed": 6}  # other cell seeds: other experiments
    run(suite_file(tmp_path, "other", other), tmp_path / "other")
    message = refused(target, root / "gnc", tmp_path / "other")  # the first source is not merged either
    assert f"{tmp_path / 'other'}: 4 of its 4 cells are no cells of {target}'s suite" in message
    assert "nothing merged" in message
    older = tmp_path / "older"
    shutil.copytree(root / "gnc", older)
    with sqlite3.connect(older / "results.sqlite") as db:
        (cell_id, plugins), *_ = db.execute("SELECT cell_id, plugins FROM cells")
        db.execute("UPDATE cells SET plugins = ? WHERE cell_id = ?", (json.dumps({**json.loads(plugins), "engine numerics": "revision 0"}), cell_id))
    message = refused(target, older)
    assert f"{older}: 1 of its 4 cells were computed with other plugin versions or engine numerics" in message
    assert "engine numerics: revision 0 there" in message
    assert "the same result folder is given twice" in refused(target, root / "gnc", root / "gnc")
    assert "the same result folder is given twice" in refused(target, target)
    assert "no results database here" in refused(target, tmp_path / "nothing")


def test_a_folder_a_run_writes_into_is_refused(folders, tmp_path):
    """Another process holds the folder's lock, as a run does."""
    root = folders
    target = tmp_path / "target"
    without_baseline(root / "whole", target)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from benchsuite.store import FolderLock; "
         "lock = FolderLock(sys.argv[1]).__enter__(); print('held', flush=True); time.sleep(120)",
         str(target / "results.sqlite")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        message = refused(target, root / "gnc")
        assert "results.sqlite" in message and str(holder.pid) in message
    finally:
        holder.kill()
        holder.wait()
    merged(target, root / "gnc")  # once the run is gone


LOADED = """
import sys
from click.testing import CliRunner
from benchsuite.cli import main
result = CliRunner().invoke(main, ["merge", *sys.argv[1:]], catch_exceptions=False)
assert result.exit_code == 0, result.output
print("torch" in sys.modules)
"""


def test_merge_loads_no_torch(folders, tmp_path):
    """Like the other commands that only read and copy results (test_cli_imports.py): a real
    process, since this one has torch loaded."""
    target = tmp_path / "target"
    without_baseline(folders / "whole", target)
    result = subprocess.run(
        [sys.executable, "-c", LOADED, str(target), str(folders / "gnc")], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False"
    assert len(rows(target / "results.sqlite", CELL_QUERY)) == 8
