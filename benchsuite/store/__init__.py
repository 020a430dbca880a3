"""The results database (SQLite) and every piece of SQL that touches it: schema (tables, version,
migrations, the check on open), database (Store: writes and reads), merge (the copy `publish` and `merge` make), lock
(one writing run per folder).
Callers import from here; the modules below never import this package back."""

from benchsuite.errors import StoreError
from benchsuite.store.database import NetworkResult, Store, TuningRecord, TuningTrial, database_of, now
from benchsuite.store.lock import FolderLock, lock_path
from benchsuite.store.schema import (
    ADDED_IN_VERSION,
    CELL_COLUMNS,
    DERIVED_VIEWS,
    EXPECTED_TABLES,
    MIGRATIONS,
    OLDEST_SCHEMA_VERSION,
    SCHEMA,
    SCHEMA_VERSION,
    check_schema,
)

__all__ = [
    "ADDED_IN_VERSION",
    "CELL_COLUMNS",
    "DERIVED_VIEWS",
    "EXPECTED_TABLES",
    "MIGRATIONS",
    "OLDEST_SCHEMA_VERSION",
    "SCHEMA",
    "SCHEMA_VERSION",
    "FolderLock",
    "NetworkResult",
    "Store",
    "StoreError",
    "TuningRecord",
    "TuningTrial",
    "check_schema",
    "database_of",
    "lock_path",
    "now",
]  # fmt: skip
