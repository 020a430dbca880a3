"""Which dataset files a run actually read: path, size and SHA-256, stored with the run.

A suite records where data should come from; this records where it did come from, so a result can
be traced to the bytes it was computed on (and a copy swapped in elsewhere shows up). Loaders call
`record` for every file they read; `capturing` collects them around one dataset load.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_open_captures: list[list[dict]] = []
CHUNK = 1 << 20


def record(path: str | Path, content: bytes | None = None) -> None:
    """Note that `path` was read (its bytes hashed from `content` when the caller has them)."""
    if not _open_captures:
        return
    path = Path(path)
    digest = hashlib.sha256()
    size = 0
    if content is not None:
        digest.update(content)
        size = len(content)
    else:
        with open(path, "rb") as file:
            while chunk := file.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
    entry = {"path": str(path.resolve()), "bytes": size, "sha256": digest.hexdigest()}
    for capture in _open_captures:
        if entry not in capture:
            capture.append(entry)


@contextmanager
def capturing() -> Iterator[list[dict]]:
    """The files recorded while the block runs."""
    files: list[dict] = []
    _open_captures.append(files)
    try:
        yield files
    finally:
        _open_captures.remove(files)
