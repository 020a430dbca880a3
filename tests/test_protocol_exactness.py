"""A run trains on the images the draw says, stores their indices, and reports ties: end to end
through benchsuite.runner on the bundled digits (the reference draw is pinned image for image on
Fashion-MNIST and a CIFAR-10-shaped split in test_tasks.py)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from test_tasks import reference_code_draw

from benchsuite.leaderboard import leaderboard_from_store
from benchsuite.plugins import load_registry
from benchsuite.records import DataOptions
from benchsuite.runner import run_suite
from benchsuite.store import SCHEMA_VERSION, Store
from benchsuite.suite import validate_suite
from benchsuite.tasks import load_splits

REGISTRY = load_registry(include_entry_points=False)
SUITE = {
    "name": "exactness",
    "seed": 1,
    "device": "cpu",
    "models_per_cell": 5,
    # class-pair seed 202 -> (7, 0); permutation seed 202 equals it: the reseed-free branch
    "tasks": [{"dataset": "digits", "class_pair_seeds": [202], "n_train": [4, 8], "training_set_seeds": [200, 202]}],
    "architectures": [{"name": "mlp", "widths": ["1/6"], "depths": [4]}],
    "optimizers": [{"name": "sgd", "epochs": 20}],
    "baselines": [{"name": "gnc", "max_candidates": 2_000_000}],
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("exactness")
    run_suite(validate_suite(SUITE, REGISTRY, "exactness.yaml"), out, REGISTRY)
    return out / "results.sqlite"


def test_each_cell_stores_the_reference_codes_training_images(finished):
    splits = load_splits(REGISTRY.dataset("digits"), DataOptions())
    with sqlite3.connect(finished) as db:
        rows = db.execute(
            "SELECT c.cell_id, c.n_train, c.training_set_seed, t.training_draw, t.class_pair_seed, "
            "t.indices FROM cells c JOIN training_indices t USING (cell_id)"
        ).fetchall()
        cells = db.execute("SELECT COUNT(*) FROM cells").fetchone()[0]
    assert len(rows) == cells == 8
    for _, n_train, seed, draw, pair_seed, indices in rows:
        assert (draw, pair_seed) == ("reference", 202)
        _, expected = reference_code_draw(splits.train_labels, splits.test_labels, 202, seed, n_train, holdout=16)
        assert json.loads(indices) == expected


def test_tie_shares_are_recomputed_from_the_rows(finished):
    with Store(finished) as store:
        rows = leaderboard_from_store(store, "gnc")
    with sqlite3.connect(finished) as db:
        for row in rows:
            networks = db.execute(
                "SELECT n.train_ties, n.test_ties, c.n_test FROM networks n JOIN cells c USING (cell_id) "
                "WHERE c.optimizer = ? AND c.n_train = ?",
                (row["optimizer"], row["n_train"]),
            ).fetchall()
            assert len(networks) == row["models"] > 0
            tied = sum(t > 0 for t, _, _ in networks) / len(networks)
            test = sum(t / n for _, t, n in networks) / len(networks)
            assert row["tied_fit_share"] == pytest.approx(tied, abs=1e-12)
            assert row["tied_test_share"] == pytest.approx(test, abs=1e-12)
    baseline = [r for r in rows if r["optimizer"] == "gnc"]
    assert any(r["tied_fit_share"] > 0 for r in baseline)  # dead units at width 1/6 tie


V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta VALUES ('schema_version', '1');
CREATE TABLE runs (run_id INTEGER PRIMARY KEY AUTOINCREMENT, suite_id TEXT NOT NULL, suite TEXT NOT NULL,
    environment TEXT NOT NULL, command TEXT NOT NULL, started_at TEXT NOT NULL, finished_at TEXT);
CREATE TABLE cells (cell_id TEXT PRIMARY KEY, run_id INTEGER NOT NULL, suite_id TEXT NOT NULL,
    dataset TEXT NOT NULL, classes TEXT NOT NULL, class_names TEXT NOT NULL, n_train INTEGER NOT NULL,
    training_set_seed INTEGER NOT NULL, architecture TEXT NOT NULL, architecture_name TEXT NOT NULL,
    width TEXT NOT NULL, depth TEXT NOT NULL, optimizer TEXT NOT NULL, optimizer_name TEXT NOT NULL,
    role TEXT NOT NULL, prior TEXT NOT NULL, hyperparameters TEXT NOT NULL,
    models_requested INTEGER NOT NULL, models_found INTEGER NOT NULL, candidates_tried INTEGER NOT NULL,
    epochs INTEGER, seconds REAL NOT NULL, exhausted INTEGER NOT NULL, seed INTEGER NOT NULL,
    device TEXT NOT NULL, finished_at TEXT NOT NULL);
CREATE TABLE networks (cell_id TEXT NOT NULL, model_index INTEGER NOT NULL, found_at INTEGER NOT NULL,
    train_acc REAL NOT NULL, test_acc REAL NOT NULL, PRIMARY KEY (cell_id, model_index));
CREATE TABLE network_metrics (cell_id TEXT NOT NULL, model_index INTEGER NOT NULL, metric TEXT NOT NULL,
    value REAL, PRIMARY KEY (cell_id, model_index, metric));
CREATE VIEW network_rows AS SELECT c.dataset, c.n_train, n.cell_id, n.model_index, n.test_acc
    FROM networks n JOIN cells c USING (cell_id);
INSERT INTO networks VALUES ('old', 0, 3, 1.0, 0.75);
"""


def test_a_version_1_database_is_migrated_when_opened_for_writing(tmp_path):
    path = tmp_path / "results.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript(V1_SCHEMA)
    with Store(path) as store:
        version = store.connection.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
        assert int(version) == SCHEMA_VERSION  # through every version since 1, one by one
        status = {column[1]: column for column in store.connection.execute("PRAGMA table_info(cells)")}
        assert status["status"][4] == "'ok'"  # version 5: old cells read as finished normally
        (row,) = store.connection.execute("SELECT test_acc, train_ties, test_ties, chain FROM networks").fetchall()
        assert tuple(row) == (0.75, None, None, None)  # old rows keep their values; ties unknown
        assert store.training_indices() == {} and store.cell_estimates() == {}
        assert store.tuning() == {} and store.tuning_trials() == []  # schema 6's tables, empty
        view = store.connection.execute("PRAGMA table_info(network_rows)").fetchall()
        assert {"train_ties", "test_ties", "n_test", "chain"} <= {column[1] for column in view}


def test_a_newer_database_is_refused(tmp_path):
    from benchsuite.errors import BenchsuiteError

    path = tmp_path / "results.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript(V1_SCHEMA.replace("'schema_version', '1'", "'schema_version', '99'"))
    with pytest.raises(BenchsuiteError, match="schema version 99 is newer"):
        Store(path)


def test_the_runner_writes_only_the_database(finished):
    """Rendering is the caller's: run_suite leaves results.sqlite (and SQLite's own files)."""
    written = {p.name for p in finished.parent.iterdir()}
    assert "results.sqlite" in written
    assert written <= {"results.sqlite", "results.sqlite-wal", "results.sqlite-shm"}, written
