"""Errors meant for people: one line, naming the file and key, and what would be valid."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class BenchsuiteError(Exception):
    """A user-facing error; the CLI prints it on one line and exits with code 2."""


class SuiteError(BenchsuiteError):
    """A suite file is invalid. Carries the file and the key path of the offending value."""

    def __init__(self, message: str, path: str = "", key: str = ""):
        self.file, self.key, self.reason = path, key, message
        where = ": ".join(part for part in (path, key) if part)
        super().__init__(f"{where}: {message}" if where else message)


class PluginError(BenchsuiteError):
    """Plugins conflict (a name given twice) or a name is not provided by any plugin."""


class StoreError(BenchsuiteError):
    """A results database is missing, damaged, newer than this code, or not one benchsuite wrote."""


def closest(name: str, valid: Iterable[str], n: int = 3) -> str:
    """'did you mean' text listing the closest valid names, then all of them."""
    valid = sorted(valid)
    near = difflib.get_close_matches(name, valid, n=n, cutoff=0.4)
    listed = ", ".join(valid) if valid else "(none installed)"
    if near:
        return f"did you mean {' or '.join(repr(v) for v in near)}? valid: {listed}"
    return f"valid: {listed}"
