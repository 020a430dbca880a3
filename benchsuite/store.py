"""The results store: SQLite, one row per interpolating network, a cell committed whole or not at all.

Tables
- runs:     one per `benchsuite run` invocation: the resolved suite (JSON) and the environment.
- cells:    one per finished cell: its identity, how the networks were found (candidates tried,
            epochs, seconds) and whether the budget ran out.
- networks: one per interpolating network: train and test accuracy, `found_at` (candidate or
            attempt index, from which the network can be regenerated with the cell's seed), and
            how many training and test points it gave two equal logits (`train_ties`,
            `test_ties`; the suite's tie_rule decided them).
- training_indices: per cell, the positions of its N training images in the dataset's training
            split (JSON, label-0 class first) and how they were drawn: anyone can audit which
            images a row was trained on.
- network_metrics: optional per-network metrics a suite asks for (benchsuite.metrics), long format.
- network_rows (view): networks joined with their cell, the flat table most analyses want.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 2  # 2: ties per network, the test-set size per cell, training_indices

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY AUTOINCREMENT,
    suite_id TEXT NOT NULL,
    suite TEXT NOT NULL,
    environment TEXT NOT NULL,
    command TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT
);
CREATE TABLE IF NOT EXISTS cells (
    cell_id TEXT PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs(run_id),
    suite_id TEXT NOT NULL,
    dataset TEXT NOT NULL,
    classes TEXT NOT NULL,
    class_names TEXT NOT NULL,
    n_train INTEGER NOT NULL,
    training_set_seed INTEGER NOT NULL,
    architecture TEXT NOT NULL,
    architecture_name TEXT NOT NULL,
    width TEXT NOT NULL,
    depth TEXT NOT NULL,
    optimizer TEXT NOT NULL,
    optimizer_name TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('optimizer', 'baseline')),
    prior TEXT NOT NULL,
    hyperparameters TEXT NOT NULL,
    models_requested INTEGER NOT NULL,
    models_found INTEGER NOT NULL,
    candidates_tried INTEGER NOT NULL,
    epochs INTEGER,
    seconds REAL NOT NULL,
    exhausted INTEGER NOT NULL,
    seed INTEGER NOT NULL,
    device TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    n_test INTEGER
);
CREATE TABLE IF NOT EXISTS networks (
    cell_id TEXT NOT NULL REFERENCES cells(cell_id),
    model_index INTEGER NOT NULL,
    found_at INTEGER NOT NULL,
    train_acc REAL NOT NULL,
    test_acc REAL NOT NULL,
    train_ties INTEGER,
    test_ties INTEGER,
    PRIMARY KEY (cell_id, model_index)
);
CREATE TABLE IF NOT EXISTS training_indices (
    cell_id TEXT PRIMARY KEY REFERENCES cells(cell_id),
    dataset TEXT NOT NULL,
    classes TEXT NOT NULL,
    training_set_seed INTEGER NOT NULL,
    training_draw TEXT NOT NULL,
    class_pair_seed INTEGER,
    n_train INTEGER NOT NULL,
    indices TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS network_metrics (
    cell_id TEXT NOT NULL,
    model_index INTEGER NOT NULL,
    metric TEXT NOT NULL,
    value REAL,
    PRIMARY KEY (cell_id, model_index, metric),
    FOREIGN KEY (cell_id, model_index) REFERENCES networks(cell_id, model_index)
);
CREATE VIEW IF NOT EXISTS network_rows AS
    SELECT c.dataset, c.classes, c.class_names, c.n_train, c.training_set_seed, c.architecture,
           c.architecture_name, c.width, c.depth, c.optimizer, c.optimizer_name, c.role, c.prior,
           c.hyperparameters, c.candidates_tried, c.epochs, c.seconds, c.exhausted, c.seed,
           c.n_test, n.cell_id, n.model_index, n.found_at, n.train_acc, n.test_acc, n.train_ties,
           n.test_ties
    FROM networks n JOIN cells c USING (cell_id);
"""
# Version 1 databases gain version 2's columns (NULL in their old rows) when opened for writing.
MIGRATIONS = {
    1: """
ALTER TABLE cells ADD COLUMN n_test INTEGER;
ALTER TABLE networks ADD COLUMN train_ties INTEGER;
ALTER TABLE networks ADD COLUMN test_ties INTEGER;
DROP VIEW IF EXISTS network_rows;
""",
}

CELL_COLUMNS = (
    "cell_id", "run_id", "suite_id", "dataset", "classes", "class_names", "n_train",
    "training_set_seed", "architecture", "architecture_name", "width", "depth", "optimizer",
    "optimizer_name", "role", "prior", "hyperparameters", "models_requested", "models_found",
    "candidates_tried", "epochs", "seconds", "exhausted", "seed", "device", "finished_at", "n_test",
)  # fmt: skip


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class NetworkResult:
    """One interpolating network as stored."""

    found_at: int
    train_acc: float
    test_acc: float
    metrics: dict[str, float] = field(default_factory=dict)
    train_ties: int | None = None  # training points with two equal logits
    test_ties: int | None = None


class Store:
    """A results database. Opening creates the schema; every cell is one transaction."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.connection = sqlite3.connect(self.path)
        self.connection.row_factory = sqlite3.Row
        self.connection.execute("PRAGMA foreign_keys = ON")
        self.connection.execute("PRAGMA journal_mode = WAL")
        with self.connection:
            self._migrate()
            self.connection.executescript(SCHEMA)
            self.connection.execute(
                "INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )

    def _migrate(self) -> None:
        """Bring an older database up to SCHEMA_VERSION, one version at a time."""
        has_meta = self.connection.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
        ).fetchone()
        if not has_meta:
            return  # a new database
        row = self.connection.execute(
            "SELECT value FROM meta WHERE key = 'schema_version'"
        ).fetchone()
        version = int(row[0]) if row else SCHEMA_VERSION
        if version > SCHEMA_VERSION:
            from benchsuite.errors import BenchsuiteError

            raise BenchsuiteError(
                f"{self.path}: results database schema version {version} is newer than this "
                f"benchsuite understands ({SCHEMA_VERSION}); upgrade benchsuite"
            )
        for old in range(version, SCHEMA_VERSION):
            self.connection.executescript(MIGRATIONS[old])

    @classmethod
    def open_existing(cls, path: str | Path) -> Store:
        """Open a database that must already exist (reading commands never create one)."""
        from benchsuite.errors import BenchsuiteError

        path = Path(path)
        if path.is_dir():
            path = path / "results.sqlite"
        if not path.is_file():
            raise BenchsuiteError(f"{path}: no results database here (run `benchsuite run` first)")
        return cls(path)

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> Store:  # noqa: PYI034 - Python 3.10 has no typing.Self
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self.connection:
            yield self.connection

    # -- runs --------------------------------------------------------------------------------
    def start_run(self, suite_id: str, suite: dict, environment: dict, command: str) -> int:
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO runs (suite_id, suite, environment, command, started_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (suite_id, json.dumps(suite, sort_keys=True), json.dumps(environment), command, now()),
            )
            return int(cursor.lastrowid)

    def finish_run(self, run_id: int) -> None:
        with self._transaction() as db:
            db.execute("UPDATE runs SET finished_at = ? WHERE run_id = ?", (now(), run_id))

    def suite_ids(self) -> set[str]:
        return {row[0] for row in self.connection.execute("SELECT DISTINCT suite_id FROM runs")}

    def runs(self) -> list[dict[str, Any]]:
        rows = self.connection.execute("SELECT * FROM runs ORDER BY run_id").fetchall()
        return [
            {**dict(row), "suite": json.loads(row["suite"]), "environment": json.loads(row["environment"])}
            for row in rows
        ]

    # -- cells -------------------------------------------------------------------------------
    def finished_cell_ids(self) -> set[str]:
        return {row[0] for row in self.connection.execute("SELECT cell_id FROM cells")}

    def add_cell(
        self,
        cell: dict[str, Any],
        networks: Sequence[NetworkResult],
        train_indices: Sequence[int] | None = None,
    ) -> None:
        """Write a finished cell, all its networks and its training images' indices atomically."""
        values = {"n_test": None, **cell, "finished_at": now(), "models_found": len(networks)}
        missing = set(CELL_COLUMNS) - set(values)
        if missing:
            raise ValueError(f"cell record lacks {sorted(missing)}")
        with self._transaction() as db:
            db.execute(
                f"INSERT INTO cells ({', '.join(CELL_COLUMNS)}) "
                f"VALUES ({', '.join('?' for _ in CELL_COLUMNS)})",
                [values[c] for c in CELL_COLUMNS],
            )
            db.executemany(
                "INSERT INTO networks (cell_id, model_index, found_at, train_acc, test_acc, "
                "train_ties, test_ties) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (cell["cell_id"], index, n.found_at, n.train_acc, n.test_acc, n.train_ties, n.test_ties)
                    for index, n in enumerate(networks)
                ],
            )
            if train_indices is not None:
                db.execute(
                    "INSERT INTO training_indices (cell_id, dataset, classes, training_set_seed, "
                    "training_draw, class_pair_seed, n_train, indices) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        cell["cell_id"], cell["dataset"], cell["classes"], cell["training_set_seed"],
                        cell["training_draw"], cell["class_pair_seed"], cell["n_train"],
                        json.dumps([int(i) for i in train_indices]),
                    ),
                )  # fmt: skip
            db.executemany(
                "INSERT INTO network_metrics (cell_id, model_index, metric, value) VALUES (?, ?, ?, ?)",
                [
                    (cell["cell_id"], index, name, value)
                    for index, n in enumerate(networks)
                    for name, value in sorted(n.metrics.items())
                ],
            )

    def cells(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.connection.execute("SELECT * FROM cells ORDER BY rowid")]

    def network_metrics(self) -> list[dict[str, Any]]:
        query = "SELECT * FROM network_metrics ORDER BY cell_id, model_index, metric"
        return [dict(r) for r in self.connection.execute(query)]

    def training_indices(self) -> dict[str, list[int]]:
        """cell id -> positions of its training images in the training split (none before v2)."""
        query = "SELECT cell_id, indices FROM training_indices"
        return {row[0]: json.loads(row[1]) for row in self.connection.execute(query)}

    def network_rows(self) -> list[dict[str, Any]]:
        query = "SELECT * FROM network_rows ORDER BY cell_id, model_index"
        return [dict(r) for r in self.connection.execute(query)]
