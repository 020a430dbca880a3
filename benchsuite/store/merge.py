"""Copying one results database into another (what `benchsuite publish` and `benchsuite merge`
do), in SQL: ATTACH the source and copy its rows across, whatever older schema version it has."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchsuite.store.schema import CELL_COLUMNS, EXPECTED_TABLES, MERGE_DEFAULTS, columns


@contextmanager
def _attached(db: sqlite3.Connection, source: Path) -> Iterator[None]:
    db.execute("ATTACH DATABASE ? AS source", (str(source),))
    try:
        yield
    finally:
        db.execute("DETACH DATABASE source")


def differing_duplicates(db: sqlite3.Connection, source: Path) -> list[str]:
    """The cells of `source` that `db` holds too but with other results: another seed, candidate
    count or number of networks, or any network's (or its metrics') stored values not equal bit for
    bit (REAL compared exactly; times are not compared). Sorted cell ids."""
    duplicate = "SELECT cell_id FROM source.cells WHERE cell_id IN (SELECT cell_id FROM main.cells)"

    def either_way(table: str) -> str:
        shared = [c for c in columns(db, table, "source") if c in columns(db, table)]
        picked = ", ".join(shared)
        one, other = (f"SELECT {picked} FROM {side}.{table} WHERE cell_id IN ({duplicate})" for side in ("source", "main"))
        return f"SELECT cell_id FROM ({one} EXCEPT {other}) UNION SELECT cell_id FROM ({other} EXCEPT {one})"

    with _attached(db, source):
        query = " UNION ".join([
            "SELECT s.cell_id FROM source.cells s JOIN main.cells m USING (cell_id) WHERE s.seed IS NOT m.seed "
            "OR s.candidates_tried IS NOT m.candidates_tried OR s.models_found IS NOT m.models_found",
            either_way("networks"),
            either_way("network_metrics"),
        ])  # fmt: skip
        return sorted(row[0] for row in db.execute(query))


def merge_database(
    db: sqlite3.Connection, source: Path, run: Mapping[str, Any] | None = None, cells: Collection[str] | None = None
) -> int:
    """Copy the runs, cells, networks, estimates, training indices, tuning and metrics of the database at
    `source` into `db` in one transaction; return the cells skipped as duplicates. With `cells`
    (cell ids), only those of the source's cells are copied, with the runs that computed them (a
    whole folder brings its whole history; a part of it, only its own).

    Runs get new ids (cells follow them); a run the database holds already (the same suite,
    environment, command and start; the environment holds the run's token, Store.start_run) is
    not recorded twice, its cells join it: one run reaching the database by two folders, as the
    blocks of one run do. A cell id already present is kept as it is: cell ids
    hash the cell's identity and seed, so a repeat is the same experiment. Columns and tables
    newer than the source's schema are left NULL or empty. `run` (a `runs` row without its id), when
    given, is added after the source's runs in the same transaction: the merge's own record.
    """
    with _attached(db, source):
        with db:
            db.execute("CREATE TEMP TABLE taken AS SELECT cell_id FROM source.cells WHERE 0")
            if cells is None:
                db.execute("INSERT INTO temp.taken SELECT cell_id FROM source.cells")
            else:
                db.executemany("INSERT INTO temp.taken VALUES (?)", ((cell_id,) for cell_id in cells))
            duplicates = db.execute(
                "SELECT COUNT(*) FROM source.cells WHERE cell_id IN (SELECT cell_id FROM main.cells) "
                "AND cell_id IN (SELECT cell_id FROM temp.taken)"
            ).fetchone()[0]
            db.execute(
                "CREATE TEMP TABLE new_cells AS SELECT cell_id FROM source.cells "
                "WHERE cell_id NOT IN (SELECT cell_id FROM main.cells) AND cell_id IN (SELECT cell_id FROM temp.taken)"
            )
            # the whole history of a whole folder; of a part, the runs that computed the cells copied
            runs = (
                "SELECT * FROM source.runs ORDER BY run_id" if cells is None
                else "SELECT * FROM source.runs WHERE run_id IN (SELECT run_id FROM source.cells "
                "WHERE cell_id IN (SELECT cell_id FROM temp.new_cells)) ORDER BY run_id"
            )  # fmt: skip
            mapping = {}
            for row in db.execute(runs).fetchall():
                record = (row["suite_id"], row["suite"], row["environment"], row["command"], row["started_at"])
                held = db.execute(
                    "SELECT run_id, finished_at FROM main.runs WHERE suite_id = ? AND suite = ? AND environment = ? "
                    "AND command = ? AND started_at = ?", record,
                ).fetchone()  # fmt: skip
                if held is None:
                    cursor = db.execute(
                        "INSERT INTO runs (suite_id, suite, environment, command, started_at, finished_at) VALUES (?, ?, ?, ?, ?, ?)",
                        (*record, row["finished_at"]),
                    )
                    mapping[row["run_id"]] = cursor.lastrowid
                    continue
                mapping[row["run_id"]] = held["run_id"]  # the same run, reaching this database by another folder
                if (row["finished_at"] or "") > (held["finished_at"] or ""):  # one copy was taken while it ran
                    db.execute("UPDATE runs SET finished_at = ? WHERE run_id = ?", (row["finished_at"], held["run_id"]))
            db.execute("CREATE TEMP TABLE run_map (old INTEGER PRIMARY KEY, new INTEGER)")
            db.executemany("INSERT INTO run_map VALUES (?, ?)", mapping.items())
            cell_columns = ", ".join(CELL_COLUMNS)
            source_cells = set(columns(db, "cells", "source"))
            selected = ", ".join(
                "m.new" if c == "run_id"
                else f"c.{c}" if c in source_cells
                else MERGE_DEFAULTS.get(c, "NULL")  # a column newer than the source's schema
                for c in CELL_COLUMNS
            )  # fmt: skip
            db.execute(
                f"INSERT INTO main.cells ({cell_columns}) SELECT {selected} FROM source.cells c "
                "JOIN temp.run_map m ON m.old = c.run_id WHERE c.cell_id IN (SELECT cell_id FROM temp.new_cells) "
                "ORDER BY c.rowid"
            )
            # older sources lack the newer columns and tables (schema versions 1, 2)
            source_networks = set(columns(db, "networks", "source"))
            network_columns = ", ".join(c for c in EXPECTED_TABLES["networks"] if c in source_networks)
            db.execute(
                f"INSERT INTO main.networks ({network_columns}) SELECT {network_columns} "
                "FROM source.networks WHERE cell_id IN (SELECT cell_id FROM temp.new_cells)"
            )
            for table in ("training_indices", "cell_estimates", "tuning", "tuning_trials"):
                if columns(db, table, "source"):  # absent from older sources
                    db.execute(
                        f"INSERT INTO main.{table} SELECT * FROM source.{table} "
                        "WHERE cell_id IN (SELECT cell_id FROM temp.new_cells)"
                    )
            db.execute(
                "INSERT INTO main.network_metrics SELECT cell_id, model_index, metric, value "
                "FROM source.network_metrics WHERE cell_id IN (SELECT cell_id FROM temp.new_cells)"
            )
            db.execute("DROP TABLE temp.run_map")
            db.execute("DROP TABLE temp.new_cells")
            db.execute("DROP TABLE temp.taken")
            if run is not None:
                db.execute(
                    "INSERT INTO runs (suite_id, suite, environment, command, started_at, finished_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        run["suite_id"], json.dumps(run["suite"], sort_keys=True), json.dumps(run["environment"]),
                        run["command"], run["started_at"], run["finished_at"],
                    ),
                )  # fmt: skip
    return duplicates
