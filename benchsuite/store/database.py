"""The results store: SQLite, one row per interpolating network, a cell committed whole or not at
all. Every read and write goes through Store, so no other module holds SQL (tables: schema.py)."""

from __future__ import annotations

import json
import os
import shlex
import sqlite3
import uuid
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchsuite.errors import StoreError
from benchsuite.store.merge import differing_duplicates, merge_database
from benchsuite.store.schema import (
    CELL_COLUMNS,
    SCHEMA_VERSION,
    bring_up_to_date,
    check_schema,
    newer_columns,
    tables,
)


WRITER_TIMEOUT = 60.0  # seconds a writer waits for a reader's snapshot to end (switching journal mode)
AT_REST_TIMEOUT = 2.0  # seconds a closing writer waits to leave the database without -wal/-shm


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
    chain: int | None = None  # the sampler's independent chain it came from, if it has chains


@dataclass(frozen=True)
class TuningTrial:
    """One tuning trial as stored (benchsuite.tuning.Trial)."""

    trial: int
    hyperparameters: dict[str, Any]
    networks: int
    fitted: int
    validation_accuracy: float | None
    chosen: bool
    seconds: float


@dataclass(frozen=True)
class TuningRecord:
    """How a tuned cell's values were chosen: the protocol and search spaces, the values, the
    validation images (training-split positions) and every trial."""

    protocol: dict[str, Any]
    chosen: dict[str, Any]
    validation_indices: Sequence[int]
    trials: Sequence[TuningTrial]


def _add_tuning(db: sqlite3.Connection, cell_id: str, tuning: TuningRecord) -> None:
    db.execute(
        "INSERT INTO tuning (cell_id, protocol, chosen, validation_indices) VALUES (?, ?, ?, ?)",
        (
            cell_id, json.dumps(tuning.protocol, sort_keys=True), json.dumps(tuning.chosen, sort_keys=True),
            json.dumps([int(i) for i in tuning.validation_indices]),
        ),
    )  # fmt: skip
    db.executemany(
        "INSERT INTO tuning_trials (cell_id, trial, hyperparameters, networks, fitted, validation_accuracy, "
        "chosen, seconds) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (cell_id, t.trial, json.dumps(t.hyperparameters, sort_keys=True), t.networks, t.fitted,
             t.validation_accuracy, int(t.chosen), float(t.seconds))
            for t in tuning.trials
        ],
    )  # fmt: skip


def database_of(path: str | Path) -> Path:
    """A result folder's database (or the database file given); a StoreError if there is none."""
    path = Path(path)
    database = path / "results.sqlite" if path.is_dir() else path
    if not database.is_file():
        raise missing_database(path, database)
    return database


def missing_database(shown: Path, database: Path) -> StoreError:
    """The one line for a database that is not there, naming `shown`; where only its compressed
    copy is (a published folder ships a big database so), it says to decompress that."""
    packed = database.with_name(database.name + ".gz")
    if packed.is_file():
        return StoreError(f"{shown}: holds {packed.name}, compressed; decompress it first (gunzip -k {shlex.quote(str(packed))})")
    return StoreError(f"{shown}: no results database here (run `benchsuite run` first)")


class Store:
    """A results database; every cell is one transaction.

    Opening a new file creates the schema. Opening an existing one first checks its schema
    version and tables (schema.check_schema): a database newer than this code, or a missing or
    altered table, is an error, never silently re-created empty (that would turn lost results
    into an empty "finished" run). A writing open migrates an older database; `read_only` opens
    never write, and read an older database's newer columns as None.
    """

    def __init__(self, path: str | Path, *, read_only: bool = False):
        self.path = Path(path)
        self.read_only = read_only
        if read_only and not self.path.is_file():
            raise missing_database(self.path, self.path)
        try:
            self.connection = self._connect()
        except (OSError, sqlite3.Error) as error:
            raise StoreError(f"{self.path}: cannot open the results database ({getattr(error, 'strerror', None) or error})") from None
        self.connection.row_factory = sqlite3.Row
        try:
            self.connection.execute("PRAGMA foreign_keys = ON")
            if read_only:
                self.connection.execute("PRAGMA query_only = ON")
                # one read transaction for the Store's life: every read sees one snapshot, so a
                # leaderboard taken while a run writes never mixes cells of two moments
                self.connection.execute("BEGIN")
            fresh = not tables(self.connection)
            version = None
            if not fresh or read_only:
                version = check_schema(self.connection, self.path, views=read_only)
            if read_only:
                self.schema_version = version
                # an older database's columns newer than it, read as None (what a migration gives)
                self._absent = newer_columns(self.connection, version)
            else:
                self.connection.execute("PRAGMA journal_mode = WAL")
                with self.connection:
                    bring_up_to_date(self.connection, version)
                self.schema_version, self._absent = SCHEMA_VERSION, {}
        except sqlite3.DatabaseError as error:
            self.connection.close()
            raise StoreError(f"{self.path}: not a readable results database ({error})") from None
        except BaseException:
            self.connection.close()
            raise

    def _connect(self) -> sqlite3.Connection:
        if not self.read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return sqlite3.connect(self.path, timeout=WRITER_TIMEOUT)
        if os.access(self.path, os.W_OK) and os.access(self.path.parent, os.W_OK):
            # writes refused (query_only below); unlike SQLite's mode=ro, the last connection to
            # close still removes the -wal/-shm files it needed, so reading leaves nothing behind
            return sqlite3.connect(self.path)
        # a file or folder we may not write: SQLite's read-only mode
        return sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)

    @staticmethod
    def remove_if_no_cells(path: str | Path) -> bool:
        """Remove the database at `path` (and its -wal, -shm and -journal files) if it holds no
        finished cell: a run that created it and failed before its first cell leaves nothing
        behind. A database with cells, or one that cannot be read, is kept. Returns whether it went."""
        path = Path(path)
        if not path.is_file():
            return False
        try:
            connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
            try:
                if "cells" in tables(connection) and connection.execute("SELECT 1 FROM cells LIMIT 1").fetchone():
                    return False
            finally:
                connection.close()
        except sqlite3.DatabaseError:
            return False
        for suffix in ("", "-wal", "-shm", "-journal"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
        return True

    @staticmethod
    def is_empty(path: str | Path) -> bool:
        """No database at `path`, or one without tables (a run killed as it created the file):
        nothing to resume from or to check."""
        path = Path(path)
        if not path.is_file() or path.stat().st_size == 0:
            return True
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            return not tables(connection)
        except sqlite3.DatabaseError:
            return False  # not a database: the writing open says so
        finally:
            connection.close()

    @classmethod
    def open_existing(cls, path: str | Path) -> Store:
        """Open a database that must already exist, read-only (reading commands never create one
        nor change its schema)."""
        path = Path(path)
        if path.is_dir():
            path = path / "results.sqlite"
        return cls(path, read_only=True)  # a missing file: missing_database's line, naming it

    def verify(self) -> None:
        """The checks a publish makes before calling results citable: SQLite's integrity check,
        foreign keys, and every cell holding as many networks as it recorded finding."""
        problems = [row[0] for row in self.connection.execute("PRAGMA integrity_check")]
        if problems != ["ok"]:
            raise StoreError(f"{self.path}: damaged database: {'; '.join(problems[:3])}")
        orphans = self.connection.execute("PRAGMA foreign_key_check").fetchall()
        if orphans:
            raise StoreError(
                f"{self.path}: {len(orphans)} row(s) refer to rows that do not exist "
                f"(first in table {orphans[0][0]}); the database was altered"
            )
        self.check_network_counts()

    def check_network_counts(self) -> None:
        """Every finished cell holds the networks it recorded: a resumed run skips finished cells,
        so cells whose networks were deleted would otherwise stay empty for good."""
        short = self.connection.execute(
            "SELECT c.cell_id, c.models_found, COUNT(n.cell_id) FROM cells c "
            "LEFT JOIN networks n USING (cell_id) GROUP BY c.cell_id HAVING COUNT(n.cell_id) != c.models_found"
        ).fetchall()
        if short:
            cell_id, recorded, stored = short[0]
            raise StoreError(
                f"{self.path}: {len(short)} cell(s) hold a different number of networks than they recorded "
                f"(cell {cell_id}: {stored} stored, {recorded} found); networks were lost or added"
            )

    def close(self) -> None:
        if not self.read_only:
            # at rest the database keeps no -wal/-shm files beside it, so readers (which open it
            # read-only) create none either; skipped while a reader holds a snapshot
            try:
                self.connection.execute(f"PRAGMA busy_timeout = {int(1000 * AT_REST_TIMEOUT)}")
                self.connection.execute("PRAGMA journal_mode = DELETE")
            except sqlite3.OperationalError:
                pass
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
        """Record a run's start. Its environment gets a `run_token` drawn now: the run's identity
        when its record reaches another database by two folders (merge.merge_database), which two
        runs of one command started in the same second on two machines would otherwise share."""
        environment = {**environment, "run_token": uuid.uuid4().hex}
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

    def cell_origins(self) -> dict[str, dict[str, Any]]:
        """Per finished cell: the suite it ran in, its seed and the plugins (distribution and
        version) it used, as recorded (None in databases older than schema 4), for the resume
        check and publish's check that every cell is a cell of the folder's final suite."""
        query = "SELECT cell_id, suite_id, seed, plugins FROM cells ORDER BY rowid"
        return {
            row["cell_id"]: {
                "suite_id": row["suite_id"], "seed": row["seed"],
                "plugins": json.loads(row["plugins"]) if row["plugins"] else None,
            }
            for row in self.connection.execute(query)
        }  # fmt: skip

    def add_cell(
        self,
        cell: dict[str, Any],
        networks: Sequence[NetworkResult],
        train_indices: Sequence[int] | None = None,
        estimates: dict[str, float] | None = None,
        tuning: TuningRecord | None = None,
    ) -> bool:
        """Write a finished cell, its networks, its training images' indices, what its sampler
        estimated and how its tuned values were chosen, atomically; return False (writing nothing)
        if the cell is already stored, so a cell delivered twice (a retried unit) is written once."""
        defaults = {"n_test": None, "plugins": None, "status": "ok", "status_detail": None, "diverged": None}
        values = {**defaults, **cell, "finished_at": now(), "models_found": len(networks)}
        missing = set(CELL_COLUMNS) - set(values)
        if missing:
            raise ValueError(f"cell record lacks {sorted(missing)}")
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM cells WHERE cell_id = ?", (cell["cell_id"],)).fetchone():
                return False
            db.execute(
                f"INSERT INTO cells ({', '.join(CELL_COLUMNS)}) "
                f"VALUES ({', '.join('?' for _ in CELL_COLUMNS)})",
                [values[c] for c in CELL_COLUMNS],
            )
            db.executemany(
                "INSERT INTO networks (cell_id, model_index, found_at, train_acc, test_acc, "
                "train_ties, test_ties, chain) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (cell["cell_id"], index, n.found_at, n.train_acc, n.test_acc, n.train_ties, n.test_ties, n.chain)
                    for index, n in enumerate(networks)
                ],
            )
            db.executemany(
                "INSERT INTO cell_estimates (cell_id, name, value) VALUES (?, ?, ?)",
                [(cell["cell_id"], name, float(value)) for name, value in sorted((estimates or {}).items())],
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
            if tuning is not None:
                _add_tuning(db, cell["cell_id"], tuning)
        return True

    def cells(self) -> list[dict[str, Any]]:
        return self._rows("cells", "SELECT * FROM cells ORDER BY rowid")

    def cell_count(self) -> int:
        return self.connection.execute("SELECT COUNT(*) FROM cells").fetchone()[0]

    def cell_suite_ids(self) -> set[str]:
        """The suite ids the finished cells record (runs record theirs too: suite_ids)."""
        return {row[0] for row in self.connection.execute("SELECT DISTINCT suite_id FROM cells")}

    def network_metrics(self) -> list[dict[str, Any]]:
        query = "SELECT * FROM network_metrics ORDER BY cell_id, model_index, metric"
        return [dict(r) for r in self.connection.execute(query)]

    def training_indices(self) -> dict[str, list[int]]:
        """cell id -> positions of its training images in the training split (none before v2)."""
        if "training_indices" not in tables(self.connection):  # a version 1 database opened read-only
            return {}
        query = "SELECT cell_id, indices FROM training_indices"
        return {row[0]: json.loads(row[1]) for row in self.connection.execute(query)}

    def cell_estimates(self) -> dict[str, dict[str, float]]:
        """cell id -> what its sampler estimated (none before v3, nor for counting samplers)."""
        if "cell_estimates" not in tables(self.connection):  # an older database opened read-only
            return {}
        out: dict[str, dict[str, float]] = {}
        for cell_id, name, value in self.connection.execute("SELECT cell_id, name, value FROM cell_estimates"):
            out.setdefault(cell_id, {})[name] = value
        return out

    def tuning(self) -> dict[str, dict[str, Any]]:
        """cell id -> its tuning (protocol, chosen values, validation indices), for tuned cells
        (none before schema 6)."""
        if "tuning" not in tables(self.connection):
            return {}
        rows = self.connection.execute("SELECT * FROM tuning ORDER BY rowid")
        return {
            row["cell_id"]: {
                "protocol": json.loads(row["protocol"]), "chosen": json.loads(row["chosen"]),
                "validation_indices": json.loads(row["validation_indices"]),
            }
            for row in rows
        }  # fmt: skip

    def tuning_trials(self) -> list[dict[str, Any]]:
        """Every tuning trial (none before schema 6), values decoded, in cell and trial order."""
        if "tuning_trials" not in tables(self.connection):
            return []
        rows = self.connection.execute("SELECT * FROM tuning_trials ORDER BY cell_id, trial")
        return [{**dict(row), "hyperparameters": json.loads(row["hyperparameters"]), "chosen": bool(row["chosen"])} for row in rows]

    def network_rows(self) -> list[dict[str, Any]]:
        return self._rows("network_rows", "SELECT * FROM network_rows ORDER BY cell_id, model_index")

    def network_metric_rows(self) -> list[dict[str, Any]]:
        """network_rows with one row per (network, metric): metric and value added."""
        query = (
            "SELECT r.*, m.metric, m.value FROM network_rows r JOIN network_metrics m "
            "USING (cell_id, model_index) ORDER BY r.cell_id, r.model_index"
        )
        return self._rows("network_rows", query)

    def _rows(self, table: str, query: str) -> list[dict[str, Any]]:
        """The query's rows as dicts, with `table`'s columns newer than an older database as None."""
        rows = [dict(row) for row in self.connection.execute(query)]
        absent = dict.fromkeys(self._absent.get(table, ()))
        if absent:
            for row in rows:
                row.update(absent)
        return rows

    # -- merging, facts about the database ------------------------------------------------------
    def merge(self, source: str | Path, run: dict[str, Any] | None = None, cells: Collection[str] | None = None) -> int:
        """Copy the results database at `source` into this one (merge.merge_database: runs get new
        ids, a cell already here is skipped, `run` recorded after them, only `cells` where given);
        return the cells skipped.
        The source is checked as any read is, so a newer or damaged one is refused before anything
        is copied."""
        Store(source, read_only=True).close()
        return merge_database(self.connection, Path(source), run, cells)

    def differing_duplicates(self, source: str | Path) -> list[str]:
        """The cells of the database at `source` held here too, with other results (merge.py)."""
        Store(source, read_only=True).close()
        return differing_duplicates(self.connection, Path(source))

    def set_meta(self, key: str, value: str) -> None:
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))
