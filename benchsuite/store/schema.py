"""The results database's schema: its tables, its version, how an older database is brought up
to date, and the check every open makes, so that a missing or altered table, or a database newer
than this code, is refused in one line instead of read wrong.

Tables
- runs:     one per `benchsuite run` invocation: the resolved suite (JSON) and the environment.
- cells:    one per finished cell: its identity, how the networks were found (candidates tried,
            epochs, seconds), whether the budget ran out, and how the cell ended (`status`:
            ok, diverged or timed_out, with `status_detail`; a cell that is not ok holds no
            networks) and, for gradient optimizers, how many networks diverged (`diverged`).
- networks: one per interpolating network: train and test accuracy, `found_at` (candidate or
            attempt index, from which the network can be regenerated with the cell's seed), and
            how many training and test points it gave two equal logits (`train_ties`,
            `test_ties`; the suite's tie_rule decided them) and, for samplers that run
            independent chains, which chain it came from (`chain`).
- cell_estimates: what a sampler estimated rather than counted, per cell (name, value): an
            estimated -log2 P(fit) with its standard error and the diagnostics that qualify it.
- training_indices: per cell, the positions of its N training images in the dataset's training
            split (JSON, label-0 class first) and how they were drawn: anyone can audit which
            images a row was trained on.
- network_metrics: optional per-network metrics a suite asks for (benchsuite.metrics), long format.
- tuning:   per tuned cell (docs/tuning.md): the protocol and search spaces (JSON), the values chosen
            (JSON; also in cells.hyperparameters) and the validation split's images (JSON positions
            in the training split, label-0 class first: held-out images, never training or test).
- tuning_trials: per tuned cell and trial: the values tried, networks trained and fitted, their
            mean validation accuracy (NULL when none fit), whether it was chosen, its seconds.
- network_rows (view): networks joined with their cell, the flat table most analyses want.
- meta:     key/value facts about the database: `schema_version` (checked on every open) and,
            for a published one, `published_from`.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from benchsuite.errors import StoreError

OLDEST_SCHEMA_VERSION = 1
SCHEMA_VERSION = 6  # 2: ties per network, the test-set size per cell, training_indices
#                    3: a sampler's chain per network, cell_estimates
#                    4: the plugins each cell used; 5: cell status, status_detail, diverged
#                    6: tuning, tuning_trials

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
    n_test INTEGER,
    plugins TEXT,
    status TEXT NOT NULL DEFAULT 'ok' CHECK (status IN ('ok', 'diverged', 'timed_out')),
    status_detail TEXT,
    diverged INTEGER
);
CREATE TABLE IF NOT EXISTS networks (
    cell_id TEXT NOT NULL REFERENCES cells(cell_id),
    model_index INTEGER NOT NULL,
    found_at INTEGER NOT NULL,
    train_acc REAL NOT NULL,
    test_acc REAL NOT NULL,
    train_ties INTEGER,
    test_ties INTEGER,
    chain INTEGER,
    PRIMARY KEY (cell_id, model_index)
);
CREATE TABLE IF NOT EXISTS cell_estimates (
    cell_id TEXT NOT NULL REFERENCES cells(cell_id),
    name TEXT NOT NULL,
    value REAL,
    PRIMARY KEY (cell_id, name)
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
CREATE TABLE IF NOT EXISTS tuning (
    cell_id TEXT PRIMARY KEY REFERENCES cells(cell_id),
    protocol TEXT NOT NULL,
    chosen TEXT NOT NULL,
    validation_indices TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tuning_trials (
    cell_id TEXT NOT NULL REFERENCES tuning(cell_id),
    trial INTEGER NOT NULL,
    hyperparameters TEXT NOT NULL,
    networks INTEGER NOT NULL,
    fitted INTEGER NOT NULL,
    validation_accuracy REAL,
    chosen INTEGER NOT NULL CHECK (chosen IN (0, 1)),
    seconds REAL NOT NULL,
    PRIMARY KEY (cell_id, trial)
);
CREATE VIEW IF NOT EXISTS network_rows AS
    SELECT c.dataset, c.classes, c.class_names, c.n_train, c.training_set_seed, c.architecture,
           c.architecture_name, c.width, c.depth, c.optimizer, c.optimizer_name, c.role, c.prior,
           c.hyperparameters, c.candidates_tried, c.epochs, c.seconds, c.exhausted, c.seed,
           c.n_test, n.cell_id, n.model_index, n.found_at, n.train_acc, n.test_acc, n.train_ties,
           n.test_ties, n.chain
    FROM networks n JOIN cells c USING (cell_id);
"""
# Older databases gain the newer columns (NULL in their old rows) when opened for writing; new
# tables come from SCHEMA's CREATE TABLE IF NOT EXISTS.
MIGRATIONS = {
    1: """
ALTER TABLE cells ADD COLUMN n_test INTEGER;
ALTER TABLE networks ADD COLUMN train_ties INTEGER;
ALTER TABLE networks ADD COLUMN test_ties INTEGER;
DROP VIEW IF EXISTS network_rows;
""",
    2: """
ALTER TABLE networks ADD COLUMN chain INTEGER;
DROP VIEW IF EXISTS network_rows;
""",
    3: """
ALTER TABLE cells ADD COLUMN plugins TEXT;
""",
    4: """
ALTER TABLE cells ADD COLUMN status TEXT NOT NULL DEFAULT 'ok' CHECK (status IN ('ok', 'diverged', 'timed_out'));
ALTER TABLE cells ADD COLUMN status_detail TEXT;
ALTER TABLE cells ADD COLUMN diverged INTEGER;
""",
    5: "",  # tuning and tuning_trials are new tables: SCHEMA creates them
}
# A column newer than a source database gets this value when merged (publish), else NULL.
MERGE_DEFAULTS = {"status": "'ok'"}

CELL_COLUMNS = (
    "cell_id", "run_id", "suite_id", "dataset", "classes", "class_names", "n_train",
    "training_set_seed", "architecture", "architecture_name", "width", "depth", "optimizer",
    "optimizer_name", "role", "prior", "hyperparameters", "models_requested", "models_found",
    "candidates_tried", "epochs", "seconds", "exhausted", "seed", "device", "finished_at", "n_test",
    "plugins", "status", "status_detail", "diverged",
)  # fmt: skip

# The tables and views a results database must hold, each with the columns readers rely on: the
# integrity check on open compares a database against this (and nothing else), so a table added to
# SCHEMA is added here too. A table added after databases already exist also goes into
# ADDED_IN_VERSION (with the SCHEMA_VERSION that introduced it): older databases may lack it.
EXPECTED_TABLES: dict[str, tuple[str, ...]] = {
    "meta": ("key", "value"),
    "runs": ("run_id", "suite_id", "suite", "environment", "command", "started_at", "finished_at"),
    "cells": CELL_COLUMNS,
    "networks": (
        "cell_id", "model_index", "found_at", "train_acc", "test_acc", "train_ties", "test_ties", "chain",
    ),
    "cell_estimates": ("cell_id", "name", "value"),
    "training_indices": (
        "cell_id", "dataset", "classes", "training_set_seed", "training_draw", "class_pair_seed",
        "n_train", "indices",
    ),
    "network_metrics": ("cell_id", "model_index", "metric", "value"),
    "tuning": ("cell_id", "protocol", "chosen", "validation_indices"),
    "tuning_trials": (
        "cell_id", "trial", "hyperparameters", "networks", "fitted", "validation_accuracy", "chosen", "seconds",
    ),
    "network_rows": (
        "dataset", "classes", "class_names", "n_train", "training_set_seed", "architecture",
        "architecture_name", "width", "depth", "optimizer", "optimizer_name", "role", "prior",
        "hyperparameters", "candidates_tried", "epochs", "seconds", "exhausted", "seed", "n_test",
        "cell_id", "model_index", "found_at", "train_acc", "test_acc", "train_ties", "test_ties",
        "chain",
    ),
}  # fmt: skip
DERIVED_VIEWS = ("network_rows",)
# "table" or "table.column" -> the SCHEMA_VERSION that added it (MIGRATIONS adds it on a writing open)
ADDED_IN_VERSION: dict[str, int] = {
    "training_indices": 2, "cells.n_test": 2, "networks.train_ties": 2, "networks.test_ties": 2,
    "network_rows.n_test": 2, "network_rows.train_ties": 2, "network_rows.test_ties": 2,
    "cell_estimates": 3, "networks.chain": 3, "network_rows.chain": 3, "cells.plugins": 4,
    "cells.status": 5, "cells.status_detail": 5, "cells.diverged": 5, "tuning": 6, "tuning_trials": 6,
}  # fmt: skip


def tables(connection: sqlite3.Connection) -> set[str]:
    """Names of the database's tables and views."""
    query = "SELECT name FROM sqlite_master WHERE type IN ('table', 'view')"
    return {row[0] for row in connection.execute(query)}


def columns(connection: sqlite3.Connection, table: str, schema: str = "main") -> list[str]:
    """The columns of `schema.table` in order; empty when it does not exist."""
    return [row[1] for row in connection.execute(f"PRAGMA {schema}.table_info({table})")]


def stored_version(connection: sqlite3.Connection, path: Path) -> int | None:
    """The schema version the database records, checked: None when it has no meta table (then
    check_schema names that table as missing). A version that is absent, not one benchsuite
    wrote, or newer than SCHEMA_VERSION is a StoreError naming the file and what to do."""
    if "meta" not in tables(connection):
        return None
    row = connection.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    text = None if row is None else str(row[0])
    if text is None or not (text.isascii() and text.isdigit()) or int(text) < OLDEST_SCHEMA_VERSION:
        found = "no schema_version" if text is None else f"schema_version {text[:40]!r}"
        raise StoreError(
            f"{path}: {found} in its meta table, which benchsuite writes as {OLDEST_SCHEMA_VERSION} to "
            f"{SCHEMA_VERSION}: not a results database benchsuite wrote, or an altered one; refusing to use it, "
            "nothing was changed"
        )
    version = int(text)
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path}: results database schema version {version} is newer than this benchsuite supports "
            f"({SCHEMA_VERSION}); upgrade benchsuite to read it; nothing was changed"
        )
    return version


def check_schema(connection: sqlite3.Connection, path: Path, views: bool = True) -> int:
    """The database's schema version, after checking it (stored_version) and that every table of
    EXPECTED_TABLES exists with its columns (those newer than the database's version excepted;
    views only when `views`: a writing open rebuilds them); raises StoreError naming the first
    problem."""
    recorded = stored_version(connection, path)
    version = SCHEMA_VERSION if recorded is None else recorded
    for table, expected in EXPECTED_TABLES.items():
        if table in DERIVED_VIEWS and not views:
            continue
        present = columns(connection, table)
        if not present:
            if ADDED_IN_VERSION.get(table, 0) > version:
                continue
            raise StoreError(
                f"{path}: table {table!r} is missing (a results database holds {', '.join(EXPECTED_TABLES)}); "
                "refusing to use it, nothing was changed"
            )
        missing = [c for c in expected if c not in present and ADDED_IN_VERSION.get(f"{table}.{c}", 0) <= version]
        if missing:
            raise StoreError(
                f"{path}: table {table!r} lacks column(s) {', '.join(missing)}; refusing to use it, nothing was changed"
            )
    return version


def newer_columns(connection: sqlite3.Connection, version: int) -> dict[str, tuple[str, ...]]:
    """table -> the columns of EXPECTED_TABLES it lacks because they are newer than `version` (an
    older database opened read-only): readers fill them with None, as a migration would."""
    if version >= SCHEMA_VERSION:
        return {}
    absent = {}
    for table, expected in EXPECTED_TABLES.items():
        present = columns(connection, table)
        lacking = tuple(c for c in expected if present and c not in present)
        if lacking:
            absent[table] = lacking
    return absent


def bring_up_to_date(connection: sqlite3.Connection, version: int | None) -> None:
    """On a writing open: migrate a database of `version` (None: a new one) one version at a
    time, rebuild the views (they hold no data), create what is missing and record SCHEMA_VERSION,
    all in one transaction: a process killed half-way (kill -9 while a run starts) leaves the
    database as it was, never tables without a schema version."""
    script = ["BEGIN;"]
    for old in range(SCHEMA_VERSION if version is None else version, SCHEMA_VERSION):
        script.append(MIGRATIONS[old])
    script += [f"DROP VIEW IF EXISTS {view};" for view in DERIVED_VIEWS]  # an old or altered view is harmless: rebuilt
    script.append(SCHEMA)
    script.append(f"INSERT OR REPLACE INTO meta VALUES ('schema_version', '{int(SCHEMA_VERSION)}');")
    script.append("COMMIT;")
    try:
        connection.executescript("\n".join(script))
    except BaseException:
        if connection.in_transaction:
            connection.rollback()
        raise
