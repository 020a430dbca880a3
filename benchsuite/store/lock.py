"""One writer per results folder: a lock file beside the database, held while a run writes.

Why a kernel lock (flock) and not only a file with a pid: the kernel drops the lock when its
process ends, however it ends (kill -9 included), so a lock left behind by a dead run is stale by
construction and the next run takes it over; the pid, host and start time written inside are
only for the message that names the run holding it. Where flock does not exist (not POSIX) the
lock is the file alone, and a file whose pid is no longer running on this host is stale.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from benchsuite.errors import StoreError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None


_HELD: set[int] = set()  # lock descriptors this process holds


def _close_held_in_child() -> None:
    """A forked child (a `processes` worker) must not keep the lock: an flock belongs to the
    open file, which fork shares, so a worker that outlived a killed driver by a moment kept the
    folder locked against the rerun. The parent's lock is unaffected."""
    for fd in _HELD:
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_held_in_child)


def lock_path(database: Path) -> Path:
    return database.with_name(database.name + ".lock")


class FolderLock:
    """`with FolderLock(database):` holds `<database>.lock`; a second holder gets a StoreError
    naming the run (pid, host, start) that writes there. `stale` is the pid of a dead run whose
    lock was taken over (None if there was none)."""

    def __init__(self, database: str | Path):
        self.path = lock_path(Path(database))
        self.fd: int | None = None
        self.stale: int | None = None

    def __enter__(self) -> FolderLock:  # noqa: PYI034 - Python 3.10 has no typing.Self
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreError(f"{self.path.parent}: cannot create the results folder ({error.strerror or error})") from None
        for _ in range(10):  # the file may be removed by its holder between open and lock
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as error:
                raise StoreError(f"{self.path.parent}: cannot write the lock file here ({error.strerror or error})") from None
            if not self._lock(fd):
                holder = _read(fd)
                os.close(fd)
                raise StoreError(_held_message(self.path, holder))
            if _same_file(fd, self.path):
                break
            os.close(fd)
        else:  # pragma: no cover - another process keeps replacing the file
            raise StoreError(f"{self.path}: could not take the lock; another run keeps replacing it")
        previous = _read(fd)
        if previous.get("pid") and previous.get("pid") != os.getpid():
            self.stale = previous["pid"]
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        os.fsync(fd)
        self.fd = fd
        _HELD.add(fd)
        return self

    def _lock(self, fd: int) -> bool:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                return False
        holder = _read(fd)  # no flock: the file alone, stale when its pid is gone from this host
        return not holder or holder.get("host") != socket.gethostname() or not _alive(holder.get("pid"))

    def __exit__(self, *exc) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # still locked: a newcomer that opened it re-checks
        finally:
            _HELD.discard(self.fd)
            os.close(self.fd)
            self.fd = None


def _read(fd: int) -> dict:
    try:
        text = os.pread(fd, 4096, 0).decode(errors="replace")
        value = json.loads(text) if text.strip() else {}
        return value if isinstance(value, dict) else {}
    except (OSError, ValueError):
        return {}


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _held_message(path: Path, holder: dict) -> str:
    who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started {holder.get('started', '?')}"
    return (
        f"{path.parent}: another benchsuite run is writing here ({who}); wait for it to finish or "
        f"stop it, or run into another folder (the lock is {path.name}; it goes when that run ends)"
    )
