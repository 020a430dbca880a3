"""Resuming a folder whose suite changed since its earlier runs: real runs on the bundled digits.

A suite grown by an N keeps every cell it had (cell ids and seeds hash what decides a cell), so
the grown run resumes into the folder with no flag, says so in one line, and leaves the folder a
fresh run of the grown suite would write; `publish` takes it. A suite that dropped or changed
cells, or a cell recorded under another engine revision, stops the run in one line, exit code 2,
the database unchanged: the same rule `publish` applies (final_suite.fit).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from cli_runner import cli
from growing_suites import FIRST, GROWN, rows, suite_file

# everything a cell computed but its timing (`seconds`) and the run that wrote it
CELL_QUERY = (
    "SELECT cell_id, seed, n_train, training_set_seed, optimizer, hyperparameters, models_found, "
    "candidates_tried, epochs, exhausted, status, plugins FROM cells ORDER BY cell_id"
)
NETWORK_QUERY = "SELECT * FROM networks ORDER BY cell_id, model_index"




def suite_ids(folder: Path) -> list[str]:
    return [row[0] for row in rows(folder / "results.sqlite", "SELECT suite_id FROM runs ORDER BY run_id")]


def stopped(suite: Path, folder: Path) -> str:
    """Run `suite` into `folder`: one line, exit code 2, the database unchanged; return the line."""
    database = folder / "results.sqlite"
    before = database.read_bytes()
    result = cli("run", str(suite), "--out", str(folder), "--quiet")
    assert result.returncode == 2, result.stderr
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1 and message.startswith("error: "), message
    assert database.read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == ["results.sqlite"]  # nothing written beside it
    assert "--restart" in message and "--resume-anyway" in message
    return message


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """`first`: the first suite alone; `grown`: the first suite, then the grown one resumed into
    the same folder with no flag; `fresh`: the grown suite into an empty folder."""
    root = tmp_path_factory.mktemp("growing")
    first, grown = suite_file(root, "first", FIRST), suite_file(root, "grown", GROWN)
    for suite, folder in ((first, "first"), (first, "grown")):
        result = cli("run", str(suite), "--out", str(root / folder), "--quiet")
        assert result.returncode == 0, result.stderr
    resumed = cli("run", str(grown), "--out", str(root / "grown"), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    fresh = cli("run", str(grown), "--out", str(root / "fresh"), "--quiet")
    assert fresh.returncode == 0, fresh.stderr
    return root, first, grown, resumed.stderr


def test_a_grown_suite_resumes_with_no_flag_into_what_a_fresh_run_writes_and_publishes(folders):
    root, _first, _grown, said = folders
    assert (
        "resuming under another version of the suite than the folder's earlier runs; all 4 finished cells are cells of this suite "
        "(same cell id, seed, plugin versions and engine revision), 4 to run"
    ) in " ".join(said.split())
    first_id, grown_id = suite_ids(root / "grown")
    assert first_id != grown_id and suite_ids(root / "fresh") == [grown_id]
    for query in (CELL_QUERY, NETWORK_QUERY):
        assert rows(root / "grown" / "results.sqlite", query) == rows(root / "fresh" / "results.sqlite", query)
    assert len(rows(root / "grown" / "results.sqlite", CELL_QUERY)) == 8
    published = cli("publish", str(root / "grown"), "--to", str(root / "boards" / "grown"), "--no-figures")
    assert published.returncode == 0, published.stderr
    readme = (root / "boards" / "grown" / "README.md").read_text()
    assert "All 8 cells are cells of the final suite" in readme


def test_a_shrunk_suite_stops_though_no_cell_id_of_it_is_new(folders, tmp_path):
    """The first suite run again into the grown folder: its cells are all there, but the N = 6
    cells are no cells of it (before, no id overlapped the dropped ones, and the run went on)."""
    root, first, _grown, _said = folders
    folder = tmp_path / "shrunk"
    folder.mkdir()
    shutil.copy(root / "grown" / "results.sqlite", folder)
    message = stopped(first, folder)
    first_id, grown_id = suite_ids(folder)
    assert f"4 of its 8 finished cells are no cells of this suite {first_id} (they ran in suite {grown_id};" in message
    assert "publish then refuses the folder" in message
    # --restart keeps the old database beside and starts afresh; the first suite alone is left
    before = (folder / "results.sqlite").read_bytes()
    restarted = cli("run", str(first), "--out", str(folder), "--quiet", "--restart")
    assert restarted.returncode == 0, restarted.stderr
    (kept,) = folder.glob("results.superseded-*.sqlite")
    assert kept.read_bytes() == before
    assert rows(folder / "results.sqlite", CELL_QUERY) == rows(root / "first" / "results.sqlite", CELL_QUERY)


def test_a_changed_hyperparameter_stops(folders, tmp_path):
    """The grown suite changes SGD's learning rate too: the first suite's SGD cells are other cells;
    --resume-anyway keeps them, knowingly."""
    root, _first, _grown, _said = folders
    folder = tmp_path / "changed"
    folder.mkdir()
    shutil.copy(root / "first" / "results.sqlite", folder)
    changed = suite_file(tmp_path, "changed", {**GROWN, "optimizers": [{"name": "sgd", "epochs": 20, "lr": 0.05}]})
    message = stopped(changed, folder)
    assert "2 of its 4 finished cells are no cells of this suite" in message and "ran other plugin" not in message
    anyway = cli("run", str(changed), "--out", str(folder), "--quiet", "--resume-anyway")
    assert anyway.returncode == 0, anyway.stderr
    assert len(rows(folder / "results.sqlite", CELL_QUERY)) == 10


@pytest.mark.parametrize("recorded", ["earlier revision", "no revision"])
def test_a_cell_of_the_earlier_suite_recorded_under_another_engine_revision_stops(folders, tmp_path, recorded):
    """A cell of the first suite is a cell of the grown one, but computed under other engine
    arithmetic (or recorded none): not the computation the grown suite makes, so growing stops."""
    from benchsuite.engine import NUMERICS_REVISION
    from benchsuite.resolved import engine_revision

    now = engine_revision(NUMERICS_REVISION, "mlp")  # what its MLP cells record

    root, _first, grown, _said = folders
    folder = tmp_path / "older"
    folder.mkdir()
    shutil.copy(root / "first" / "results.sqlite", folder)
    with sqlite3.connect(folder / "results.sqlite") as db:
        (cell_id, plugins), *_ = db.execute("SELECT cell_id, plugins FROM cells ORDER BY cell_id")
        older = json.loads(plugins)
        if recorded == "earlier revision":
            older["engine numerics"] = f"revision {now - 1}"
        else:
            del older["engine numerics"]
        db.execute("UPDATE cells SET plugins = ? WHERE cell_id = ?", (json.dumps(older), cell_id))
    then = f"revision {now - 1}" if recorded == "earlier revision" else "none recorded"
    message = stopped(grown, folder)
    assert (
        f"1 of its 4 finished cells ran other plugin versions or another engine revision than this run uses "
        f"(engine numerics: {then} then, revision {now} now)"
    ) in message
