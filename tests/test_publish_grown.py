"""Publishing a folder whose suite grew between runs: real runs on the bundled digits.

A suite grown by an N resumes into its folder (with no flag: its cells are all the grown suite's,
tests/test_grown_resume.py), so the folder's runs record two suite ids. Every cell the first
version computed is a cell of the grown suite (same cell id and seed), so the folder is a run of
the grown suite: publish takes it, and its leaderboard equals a fresh run's. A folder holding a
cell the final suite dropped or changed (resumed with --resume-anyway) is refused in one line.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from cli_runner import cli
from growing_suites import FIRST, GROWN, rows, suite_file

# what a cell computed: compared between the grown folder and a fresh run, row for row
CELL_QUERY = (
    "SELECT cell_id, seed, n_train, training_set_seed, optimizer, models_found, candidates_tried, epochs, status "
    "FROM cells ORDER BY cell_id"
)
NETWORK_QUERY = "SELECT cell_id, model_index, found_at, train_acc, test_acc FROM networks ORDER BY cell_id, model_index"



def run(suite: Path, out: Path, *flags: str) -> None:
    result = cli("run", str(suite), "--out", str(out), "--quiet", *flags)
    assert result.returncode == 0, result.stderr


def suite_ids(folder: Path) -> list[str]:
    with sqlite3.connect(folder / "results.sqlite") as db:
        return [row[0] for row in db.execute("SELECT suite_id FROM runs ORDER BY run_id")]


def untimed(board: list[dict]) -> list[dict]:
    """Leaderboard rows without `seconds`, the one column that is this machine's timing, not a result."""
    return [{k: v for k, v in row.items() if k != "seconds"} for row in board]



@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """`grown`: the first suite, then the grown one resumed into the same folder; `fresh`: the
    grown suite into an empty folder."""
    root = tmp_path_factory.mktemp("grown")
    first, grown = suite_file(root, "first", FIRST), suite_file(root, "grown", GROWN)
    run(first, root / "grown")
    run(grown, root / "grown")  # resumes: every finished cell is a cell of the grown suite
    run(grown, root / "fresh")
    assert len(set(suite_ids(root / "grown"))) == 2 and len(set(suite_ids(root / "fresh"))) == 1
    return root, first, grown


def test_a_grown_folder_publishes_the_leaderboard_of_a_fresh_run_of_the_final_suite(folders):
    root, _first, _grown = folders
    result = cli("publish", str(root / "grown"), "--to", str(root / "boards" / "grown"), "--no-figures")
    assert result.returncode == 0, result.stderr
    fresh = cli("publish", str(root / "fresh"), "--to", str(root / "boards" / "fresh"), "--no-figures")
    assert fresh.returncode == 0, fresh.stderr
    grown_board, fresh_board = root / "boards" / "grown", root / "boards" / "fresh"
    # the same cells, the same networks, the same leaderboard rows
    for query in (CELL_QUERY, NETWORK_QUERY):
        assert rows(grown_board / "results.sqlite", query) == rows(fresh_board / "results.sqlite", query)
    assert len(rows(grown_board / "results.sqlite", CELL_QUERY)) == 8
    board, again = (untimed(json.loads((b / "leaderboard.json").read_text())) for b in (grown_board, fresh_board))
    assert board == again and len(board) == 4
    # published as the final suite, saying honestly how it ran
    first_id, final_id = dict.fromkeys(suite_ids(root / "grown"))
    assert (grown_board / "suite.json").read_text() == (fresh_board / "suite.json").read_text()
    assert json.loads((grown_board / "environment.json").read_text())["suite_id"] == final_id
    readme = (grown_board / "README.md").read_text()
    assert f"run in 2 runs under 2 suite ids (earlier: `{first_id}`; final: `{final_id}`)" in readme
    assert "All 8 cells are cells of the final suite" in readme
    assert "4 of them were computed under another suite id (an earlier version of this suite" in readme
    assert "suite ids" not in (fresh_board / "README.md").read_text()
    # and the folder compares with the fresh run as one suite, row for row
    compared = cli("compare", str(root / "grown"), str(root / "fresh"), "--format", "json")
    assert compared.returncode == 0, compared.stderr
    assert all(row["difference_pp"] == 0 for row in json.loads(compared.stdout)["rows"])


def refused(folder: Path, target: Path) -> str:
    """Publish `folder`: one line, exit code 2, nothing written; return the line."""
    before = (folder / "results.sqlite").read_bytes()
    result = cli("publish", str(folder), "--to", str(target), "--no-figures")
    assert result.returncode == 2, result.stderr
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert not target.exists() and not list(target.parent.glob(f".{target.name}*"))
    assert (folder / "results.sqlite").read_bytes() == before
    return message


def test_a_folder_whose_final_suite_dropped_cells_is_refused(folders, tmp_path):
    """The suite shrank back: the last run is the first suite, and the N = 6 cells are no cells of it."""
    root, first, _grown = folders
    folder = tmp_path / "shrunk"
    shutil.copytree(root / "grown", folder)
    run(first, folder, "--resume-anyway")  # nothing to compute, but it is the folder's final suite now
    message = refused(folder, tmp_path / "board")
    final = suite_ids(folder)[-1]
    assert f"{folder}: 4 of its 8 cells belong to no cell of its final suite {final}" in message
    assert "new folder" in message


def test_a_folder_whose_final_suite_changed_a_hyperparameter_is_refused(folders, tmp_path):
    """The grown suite changes SGD's learning rate too: the first suite's SGD cells are other cells."""
    root, first, _grown = folders
    folder = tmp_path / "changed"
    run(first, folder)
    changed = {**GROWN, "optimizers": [{"name": "sgd", "epochs": 20, "lr": 0.05}]}
    run(suite_file(tmp_path, "changed", changed), folder, "--resume-anyway")
    message = refused(folder, tmp_path / "board")
    assert f"2 of its 10 cells belong to no cell of its final suite {suite_ids(folder)[-1]}" in message


def test_an_earlier_cell_of_another_engine_revision_is_refused(folders, tmp_path):
    """A cell of the final suite computed by an earlier run under other engine arithmetic is not
    the computation the final suite makes."""
    from benchsuite.engine import NUMERICS_REVISION
    from benchsuite.resolved import engine_revision

    now = engine_revision(NUMERICS_REVISION, "mlp")  # what its MLP cells record

    root, _first, _grown = folders
    folder = tmp_path / "older"
    shutil.copytree(root / "grown", folder)
    first_id = suite_ids(folder)[0]
    with sqlite3.connect(folder / "results.sqlite") as db:
        (cell_id, plugins), *_ = db.execute("SELECT cell_id, plugins FROM cells WHERE suite_id = ?", (first_id,))
        older = {**json.loads(plugins), "engine numerics": f"revision {now - 1}"}
        db.execute("UPDATE cells SET plugins = ? WHERE cell_id = ?", (json.dumps(older), cell_id))
    message = refused(folder, tmp_path / "board")
    assert (
        f"1 of its cells ran under an earlier suite version with other plugin versions or engine numerics than "
        f"its final suite {suite_ids(folder)[-1]} (engine numerics: revision {now - 1} then, "
        f"revision {now} in the final suite)"
    ) in message


def test_a_final_suite_that_computed_no_cell_of_its_own_is_checked_against_its_runs(folders, tmp_path):
    """Only the description changed: the final suite's run computes nothing, so the plugin versions
    and engine revision to match are those its run's environment records."""
    root, _first, _grown = folders
    folder = tmp_path / "described"
    shutil.copytree(root / "grown", folder)
    described = suite_file(tmp_path, "described", {**GROWN, "description": "the same cells, described"})
    run(described, folder)  # the same cells: resumes with no flag
    with sqlite3.connect(folder / "results.sqlite") as db:
        (environment,) = db.execute("SELECT environment FROM runs ORDER BY run_id DESC LIMIT 1").fetchone()
    assert json.loads(environment)["engine numerics"].startswith("revision ")
    result = cli("publish", str(folder), "--to", str(tmp_path / "board"), "--no-figures")
    assert result.returncode == 0, result.stderr
    readme = (tmp_path / "board" / "README.md").read_text()
    assert "3 runs under 3 suite ids" in readme and "8 of them were computed under another suite id" in readme
    with sqlite3.connect(folder / "results.sqlite") as db:  # that run recorded another engine revision
        older = {**json.loads(environment), "engine numerics": "revision 0"}
        db.execute("UPDATE runs SET environment = ? WHERE run_id = (SELECT MAX(run_id) FROM runs)", (json.dumps(older),))
    message = refused(folder, tmp_path / "again")
    assert "8 of its cells ran under an earlier suite version" in message and "revision 0 in the final suite" in message
