"""`benchsuite run --reuse FOLDER`: a suite's cells taken from another suite's folder instead of
computed; real runs on the bundled digits, real SQLite.

The scene it serves: a big suite's folder (the optimizer zoo's) holds a block that is a suite of
its own (its G&C cells, one architecture, the cheap optimizers); running the block's suite with
--reuse of the big folder builds the block's folder without computing anything, and it publishes
as the block. The other way round, a big suite reuses the published blocks and computes the rest.
"""

from __future__ import annotations

import gzip
import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from cli_runner import cli
from growing_suites import FIRST, GROWN, rows, suite_file

CELL_QUERY = "SELECT cell_id, seed, n_train, training_set_seed, optimizer, models_found, candidates_tried, status FROM cells ORDER BY cell_id"
NETWORK_QUERY = "SELECT cell_id, model_index, found_at, train_acc, test_acc, train_ties, test_ties FROM networks ORDER BY cell_id, model_index"
GNC_ONLY = {**GROWN, "name": "grown-gnc", "optimizers": []}  # the grown suite's G&C cells alone


def run(suite: Path, out: Path, *reuse: Path) -> str:
    words = [word for folder in reuse for word in ("--reuse", str(folder))]
    result = cli("run", str(suite), "--out", str(out), *words)
    assert result.returncode == 0, result.stderr
    return result.stderr


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """`whole`: the grown suite (sgd and G&C, N 4 and 6, two training sets); `gnc`: its G&C cells
    computed by a run of their own."""
    root = tmp_path_factory.mktemp("reuse")
    run(suite_file(root, "grown", GROWN), root / "whole")
    run(suite_file(root, "gnc", GNC_ONLY), root / "gnc")
    return root


def test_a_block_of_a_bigger_folder_is_reused_bit_for_bit_and_publishes_as_its_own_suite(folders, tmp_path):
    root = folders
    said = run(suite_file(tmp_path, "gnc", GNC_ONLY), tmp_path / "block", root / "whole")
    assert f"reused 4 cells of this suite from {root / 'whole'} (8 finished there)" in said
    assert "0 of the suite's 4 cells to run" in said
    # what the G&C-only run computed, bit for bit, and nothing of sgd
    for query in (CELL_QUERY, NETWORK_QUERY):
        assert rows(tmp_path / "block" / "results.sqlite", query) == rows(root / "gnc" / "results.sqlite", query)
    with sqlite3.connect(tmp_path / "block" / "results.sqlite") as db:
        (last,) = db.execute("SELECT suite FROM runs ORDER BY run_id DESC LIMIT 1").fetchone()
    assert json.loads(last)["name"] == "grown-gnc"  # the folder is the block's: its last run
    published = cli("publish", str(tmp_path / "block"), "--to", str(tmp_path / "board"), "--no-figures")
    assert published.returncode == 0, published.stderr
    assert "4 of them were computed under another suite id (an earlier version of this suite, or a suite whose cells they also are, such as a bigger suite whose folder was reused with `--reuse`)" in (tmp_path / "board" / "README.md").read_text()


def test_a_block_takes_the_runs_that_computed_its_cells_and_no_other_history(folders, tmp_path):
    """The source ran twice: G&C alone, then the grown suite computing sgd. The G&C block takes
    the first run with its cells, not the second, which computed none of them: the block's
    history names only suites its cells were computed under (the published README says so)."""
    source = tmp_path / "source"
    shutil.copytree(folders / "gnc", source)
    run(suite_file(tmp_path, "grown", GROWN), source)  # resumes the G&C cells, computes sgd's
    gnc_id, grown_id = dict.fromkeys(r[0] for r in rows(source / "results.sqlite", "SELECT suite_id FROM runs ORDER BY run_id"))
    run(suite_file(tmp_path, "gnc", GNC_ONLY), tmp_path / "block", source)
    runs = rows(tmp_path / "block" / "results.sqlite", "SELECT suite_id FROM runs ORDER BY run_id")
    assert runs == [(gnc_id,), (gnc_id,)]  # the run that computed the cells, then the block's own
    assert grown_id not in {r[0] for r in rows(tmp_path / "block" / "results.sqlite", "SELECT suite_id FROM cells")}


def test_blocks_of_one_run_bring_that_run_once(folders, tmp_path):
    """Two blocks built from one folder both carry the run that computed their cells; a suite
    reusing both records that run once (the zoo's full board took its stacked run from two blocks
    and listed it twice), with every cell it computed under it."""
    root = folders
    record = "SELECT suite_id, command, started_at FROM runs ORDER BY run_id"
    (whole_run,) = rows(root / "whole" / "results.sqlite", record)
    run(suite_file(tmp_path, "first", FIRST), tmp_path / "first", root / "whole")  # N = 4, sgd and G&C
    run(suite_file(tmp_path, "gnc", GNC_ONLY), tmp_path / "gnc", root / "whole")  # G&C, N = 4 and 6
    run(suite_file(tmp_path, "grown", GROWN), tmp_path / "grown", tmp_path / "first", tmp_path / "gnc")
    database = tmp_path / "grown" / "results.sqlite"
    history = rows(database, record)
    assert history.count(whole_run) == 1, history
    # whole's run computed 6 of the 8 cells (both blocks' cells); the grown run computed sgd at N = 6
    per_run = dict(rows(database, "SELECT r.command, COUNT(c.cell_id) FROM runs r LEFT JOIN cells c USING (run_id) GROUP BY r.run_id"))
    assert per_run[whole_run[1]] == 6
    for query in (CELL_QUERY, NETWORK_QUERY):
        assert rows(database, query) == rows(root / "whole" / "results.sqlite", query)


def test_a_bigger_suite_reuses_the_blocks_and_computes_the_rest(folders, tmp_path):
    root = folders
    run(suite_file(tmp_path, "first", FIRST), tmp_path / "first")  # N = 4: 4 of the grown suite's 8 cells
    said = run(suite_file(tmp_path, "grown", GROWN), tmp_path / "grown", tmp_path / "first", root / "gnc")
    assert f"reused 4 cells of this suite from {tmp_path / 'first'} (4 finished there)" in said
    # gnc's N = 4 cells came from `first` already: only its N = 6 ones are taken
    assert f"reused 2 cells of this suite from {root / 'gnc'} (4 finished there)" in said
    assert "2 of the suite's 8 cells to run" in said  # sgd at N = 6
    for query in (CELL_QUERY, NETWORK_QUERY):
        assert rows(tmp_path / "grown" / "results.sqlite", query) == rows(root / "whole" / "results.sqlite", query)


def test_a_cell_computed_with_other_numerics_is_computed_again(folders, tmp_path):
    root = folders
    older = tmp_path / "older"
    shutil.copytree(root / "whole", older)
    with sqlite3.connect(older / "results.sqlite") as db:
        cell_id, plugins = db.execute("SELECT cell_id, plugins FROM cells WHERE role = 'baseline' ORDER BY cell_id").fetchone()
        changed = {**json.loads(plugins), "engine numerics": "revision 0"}
        db.execute("UPDATE cells SET plugins = ? WHERE cell_id = ?", (json.dumps(changed), cell_id))
        db.execute("UPDATE networks SET test_acc = -1 WHERE cell_id = ?", (cell_id,))  # marks the copy
    said = run(suite_file(tmp_path, "gnc", GNC_ONLY), tmp_path / "block", older)
    assert f"reused 3 cells of this suite from {older} (8 finished there); 1 left to compute" in said
    # the one left was computed here, as the G&C-only run computed it
    for query in (CELL_QUERY, NETWORK_QUERY):
        assert rows(tmp_path / "block" / "results.sqlite", query) == rows(root / "gnc" / "results.sqlite", query)


def test_a_folder_without_results_or_the_runs_own_folder_is_refused_before_anything_is_written(folders, tmp_path):
    suite = suite_file(tmp_path, "gnc", GNC_ONLY)
    result = cli("run", str(suite), "--out", str(tmp_path / "new"), "--reuse", str(tmp_path / "nothing"))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert f"{tmp_path / 'nothing'}: no results database here" in result.stderr
    assert not (tmp_path / "new").exists()
    # a published folder that ships its database compressed: one line that says to decompress it
    (tmp_path / "packed").mkdir()
    with open(folders / "gnc" / "results.sqlite", "rb") as raw, gzip.open(tmp_path / "packed" / "results.sqlite.gz", "wb") as packed:
        shutil.copyfileobj(raw, packed)
    result = cli("run", str(suite), "--out", str(tmp_path / "new"), "--reuse", str(tmp_path / "packed"))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert f"{tmp_path / 'packed'}: holds results.sqlite.gz, compressed; decompress it first (gunzip -k" in result.stderr
    assert not (tmp_path / "new").exists() and sorted(p.name for p in (tmp_path / "packed").iterdir()) == ["results.sqlite.gz"]
    shown = cli("leaderboard", str(tmp_path / "packed"))  # every reader says it, not only --reuse
    assert shown.returncode == 2 and len(shown.stderr.strip().splitlines()) == 1, shown.stderr
    assert f"{tmp_path / 'packed' / 'results.sqlite'}: holds results.sqlite.gz, compressed; decompress it first" in shown.stderr
    assert sorted(p.name for p in (tmp_path / "packed").iterdir()) == ["results.sqlite.gz"]
    shutil.copytree(folders / "gnc", tmp_path / "own")
    before = (tmp_path / "own" / "results.sqlite").read_bytes()
    result = cli("run", str(suite), "--out", str(tmp_path / "own"), "--reuse", str(tmp_path / "own"))
    assert result.returncode == 2 and "--reuse names the run's own folder" in result.stderr, result.stderr
    assert (tmp_path / "own" / "results.sqlite").read_bytes() == before
