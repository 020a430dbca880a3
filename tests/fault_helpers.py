"""Shared by the executor and fault tests: what two result databases must agree on, real
`benchsuite` processes, and the processes below a pid (read from /proc, to kill real workers)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "benchsuite.cli"]

# Every stored table, without what differs between two runs of the same cells: run ids, timings,
# when a cell finished. Rows sorted by their keys, so the order cells arrived in does not matter.
COMPARED = {
    "cells": "SELECT * FROM cells ORDER BY cell_id",
    "networks": "SELECT * FROM networks ORDER BY cell_id, model_index",
    "network_metrics": "SELECT * FROM network_metrics ORDER BY cell_id, model_index, metric",
    "cell_estimates": "SELECT * FROM cell_estimates ORDER BY cell_id, name",
    "training_indices": "SELECT * FROM training_indices ORDER BY cell_id",
}
NOT_COMPARED = {"run_id", "seconds", "finished_at"}


def reader(database: Path) -> sqlite3.Connection:
    """A connection that refuses writes and, as the Store's readers, leaves no -wal/-shm behind."""
    if not Path(database).is_file():
        raise sqlite3.OperationalError(f"{database}: no database yet")
    db = sqlite3.connect(database)
    db.execute("PRAGMA query_only = ON")
    return db


def comparable_rows(database: Path) -> dict[str, list[tuple]]:
    """table -> its rows (every column but NOT_COMPARED), read through a read-only connection."""
    with contextlib.closing(reader(database)) as db:
        tables = {}
        for table, query in COMPARED.items():
            cursor = db.execute(query)
            keep = [i for i, d in enumerate(cursor.description) if d[0] not in NOT_COMPARED]
            tables[table] = [tuple(row[i] for i in keep) for row in cursor.fetchall()]
    return tables


def cell_count(database: Path) -> int:
    try:
        with contextlib.closing(reader(database)) as db:
            return db.execute("SELECT COUNT(*) FROM cells").fetchone()[0]
    except sqlite3.DatabaseError:  # not created yet, or its schema not yet written
        return 0


def environment(**variables: str) -> dict[str, str]:
    """This process's environment, with this checkout first on PYTHONPATH (a real process
    imports the code under test) and `variables` set."""
    paths = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), **variables}


def start_run(*args: str | Path, **variables: str) -> subprocess.Popen:
    """`benchsuite run ARGS --quiet` as a real process of its own (its own session)."""
    return subprocess.Popen(
        [*CLI, "run", *map(str, args), "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env=environment(**variables), start_new_session=True, text=True,
    )  # fmt: skip


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, their children, ...), from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def command_of(pid: int) -> str:
    """The process's command line as it shows it (Ray renames its workers `ray::TASK`)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return cmdline.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
