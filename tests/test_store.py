"""The store's schema version, checked on every open, on real SQLite files: a newer database is
refused in one line (the CLI exits 2), an older one is read as it is and migrated only by a
writing open, and every published leaderboard's database opens. And no SQL outside the store."""

from __future__ import annotations

import ast
import gzip
import re
import shutil
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner
from stored_results import make_results

from benchsuite.cli import main
from benchsuite.leaderboard import leaderboard_from_store
from benchsuite.store import EXPECTED_TABLES, SCHEMA_VERSION, Store, StoreError

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = sorted(p for p in (ROOT / "leaderboards").iterdir() if p.is_dir()) if (ROOT / "leaderboards").is_dir() else []
# version 4 -> 2: what a database written before samplers recorded chains and estimates, and cells
# their plugins' versions, holds
DOWNGRADE_TO_2 = """
DROP VIEW network_rows;
DROP TABLE cell_estimates;
ALTER TABLE networks DROP COLUMN chain;
ALTER TABLE cells DROP COLUMN plugins;
ALTER TABLE cells DROP COLUMN status;
ALTER TABLE cells DROP COLUMN status_detail;
ALTER TABLE cells DROP COLUMN diverged;
CREATE VIEW network_rows AS
    SELECT c.dataset, c.classes, c.class_names, c.n_train, c.training_set_seed, c.architecture,
           c.architecture_name, c.width, c.depth, c.optimizer, c.optimizer_name, c.role, c.prior,
           c.hyperparameters, c.candidates_tried, c.epochs, c.seconds, c.exhausted, c.seed,
           c.n_test, n.cell_id, n.model_index, n.found_at, n.train_acc, n.test_acc, n.train_ties,
           n.test_ties
    FROM networks n JOIN cells c USING (cell_id);
UPDATE meta SET value = '2' WHERE key = 'schema_version';
"""


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    return make_results(tmp_path_factory.mktemp("store") / "out", pairs=((0, 1),), n_trains=(4,), seeds=(200, 201), models=4)


def copy_of(results: Path, tmp_path: Path, script: str = "") -> Path:
    folder = tmp_path / "copy"
    folder.mkdir()
    shutil.copy(results / "results.sqlite", folder / "results.sqlite")
    if script:
        db = sqlite3.connect(folder / "results.sqlite")
        db.executescript(script)
        db.close()  # checkpoints the WAL: the file alone holds the database
    return folder


def version_of(database: Path) -> str:
    with sqlite3.connect(database) as db:
        return db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]


def test_a_newer_database_is_refused_in_one_line_by_every_open(results, tmp_path):
    folder = copy_of(results, tmp_path, f"UPDATE meta SET value = '{SCHEMA_VERSION + 1}' WHERE key = 'schema_version';")
    database = folder / "results.sqlite"
    before = database.read_bytes()
    for opening in (lambda: Store(database), lambda: Store(database, read_only=True), lambda: Store.open_existing(folder)):
        with pytest.raises(StoreError) as error:
            opening()
        message = str(error.value)
        assert "\n" not in message and message.startswith(f"{database}: ")
        assert f"schema version {SCHEMA_VERSION + 1} is newer than this benchsuite supports ({SCHEMA_VERSION})" in message
        assert "upgrade benchsuite" in message
    assert database.read_bytes() == before  # nothing migrated, nothing written


def test_the_cli_turns_a_newer_database_into_exit_code_2(results, tmp_path):
    folder = copy_of(results, tmp_path, "UPDATE meta SET value = '99' WHERE key = 'schema_version';")
    runner = CliRunner()
    for command in (["leaderboard", str(folder)], ["publish", str(folder), "--to", str(tmp_path / "board"), "--no-figures"]):
        result = runner.invoke(main, command)
        assert result.exit_code == 2, result.output
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("error: ") and "schema version 99 is newer" in line
    assert not (tmp_path / "board").exists() and version_of(folder / "results.sqlite") == "99"


@pytest.mark.parametrize(
    ("value", "shown"),
    [("'abc'", "schema_version 'abc'"), ("'0'", "schema_version '0'"), ("'-1'", "schema_version '-1'"), ("'²'", "schema_version '²'"), (None, "no schema_version")],
)
def test_a_version_benchsuite_never_wrote_is_refused(results, tmp_path, value, shown):
    script = (
        "DELETE FROM meta WHERE key = 'schema_version';"
        if value is None
        else f"UPDATE meta SET value = {value} WHERE key = 'schema_version';"
    )
    folder = copy_of(results, tmp_path, script)
    for read_only in (True, False):
        with pytest.raises(StoreError, match=re.escape(shown) + ".*not a results database benchsuite wrote") as error:
            Store(folder / "results.sqlite", read_only=read_only)
        assert "\n" not in str(error.value)


def test_a_version_2_database_is_read_as_it_is_and_migrated_only_by_a_writing_open(results, tmp_path):
    with Store.open_existing(results) as store:
        expected = leaderboard_from_store(store)
    folder = copy_of(results, tmp_path, DOWNGRADE_TO_2)
    database = folder / "results.sqlite"
    before = database.read_bytes()
    with Store.open_existing(folder) as store:
        assert store.schema_version == 2
        rows = store.network_rows()
        assert rows and all(row["chain"] is None for row in rows)
        assert set(rows[0]) == set(EXPECTED_TABLES["network_rows"])
        assert store.cell_estimates() == {}
        assert leaderboard_from_store(store) == expected
    assert database.read_bytes() == before
    with Store(database) as store:
        assert store.schema_version == SCHEMA_VERSION
    assert version_of(database) == str(SCHEMA_VERSION)
    with sqlite3.connect(database) as db:
        assert "chain" in {row[1] for row in db.execute("PRAGMA table_info(networks)")}


V1_DATABASE = ROOT / "leaderboards" / "fashion-mnist-width-lenet-cpu" / "results.sqlite"


@pytest.mark.skipif(not V1_DATABASE.is_file(), reason="the published version 1 database is not in this checkout")
def test_the_published_version_1_database_reads_every_column_and_migrates_on_write(tmp_path):
    database = tmp_path / "results.sqlite"
    shutil.copy(V1_DATABASE, database)
    before = database.read_bytes()
    with Store(database, read_only=True) as store:
        assert store.schema_version == 1
        cells, rows = store.cells(), store.network_rows()
        assert len(cells) == 160 and len(rows) == 8000
        assert set(cells[0]) == set(EXPECTED_TABLES["cells"]) and cells[0]["n_test"] is None
        assert {row["train_ties"] for row in rows} == {None} and store.training_indices() == {}
    assert database.read_bytes() == before
    with Store(database) as store:
        assert store.schema_version == SCHEMA_VERSION and len(store.cells()) == 160


@pytest.mark.parametrize("folder", PUBLISHED, ids=[p.name for p in PUBLISHED])
def test_every_published_database_opens_with_a_version_this_code_supports(folder, tmp_path):
    packed = folder / "results.sqlite.gz"
    database = folder / "results.sqlite"
    if packed.is_file():
        database = tmp_path / "results.sqlite"
        with gzip.open(packed) as source, database.open("wb") as target:
            shutil.copyfileobj(source, target)
    with Store(database, read_only=True) as store:
        assert 1 <= store.schema_version <= SCHEMA_VERSION
        assert store.cell_count() == len(store.cells()) > 0
        assert store.cell_suite_ids() == store.suite_ids()


def test_merge_refuses_a_newer_source_before_copying_anything(results, tmp_path):
    newer = copy_of(results, tmp_path, "UPDATE meta SET value = '99' WHERE key = 'schema_version';")
    with Store(tmp_path / "merged.sqlite") as store:
        with pytest.raises(StoreError, match="schema version 99 is newer"):
            store.merge(newer / "results.sqlite")
        assert store.cell_count() == 0 and store.runs() == []


def test_one_run_merged_by_two_copies_is_recorded_once_as_finished(results, tmp_path):
    """A copy taken while its run was going (no finished_at yet) and the finished folder both
    carry the run: merged, it is one run, finished, holding every cell once. Two runs of one
    command started in the same second elsewhere stay two: each carries its own token."""
    running = copy_of(results, tmp_path, "UPDATE runs SET finished_at = NULL;")
    with Store(tmp_path / "merged.sqlite") as store:
        store.merge(running / "results.sqlite")
        store.merge(results / "results.sqlite")
        (merged,) = store.runs()
        with Store(results / "results.sqlite", read_only=True) as source:
            (original,) = source.runs()
            assert store.cell_count() == source.cell_count()
        assert merged["finished_at"] == original["finished_at"] is not None
        assert merged["environment"]["run_token"] == original["environment"]["run_token"]
    twin = make_results(tmp_path / "twin", pairs=((0, 1),), n_trains=(4,), seeds=(202,), models=4)
    with Store(tmp_path / "merged.sqlite") as store:
        store.merge(twin / "results.sqlite")
        assert len(store.runs()) == 2


SQL = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|ATTACH|DETACH|PRAGMA|CREATE|ALTER|DROP)\s+[A-Za-z*(]")


def test_no_sql_outside_the_store():
    """Every SQL statement lives in benchsuite/store: other modules call named store functions."""
    found = []
    for path in sorted((ROOT / "benchsuite").rglob("*.py")):
        if path.relative_to(ROOT / "benchsuite").parts[0] == "store":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.search(node.value):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value[:60]!r}")
    assert found == []
