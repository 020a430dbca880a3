"""Output folders and shell commands built from names a suite file chose.

A suite travels between people, so its name is untrusted: as a folder name it must not climb out
of `runs/` or point at an absolute path, and as part of a printed command it must not put a
command into a reader's shell.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Sequence
from pathlib import Path

from benchsuite.errors import BenchsuiteError

RUNS_FOLDER = Path("runs")
MAX_FOLDER_NAME = 100
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_folder_name(name: str) -> str:
    """`name` as one folder name: runs of other characters than letters, digits, '.', '_' and '-'
    become '-', and leading dots and dashes go (no '..', no hidden folder, no option-like name)."""
    folder = _UNSAFE.sub("-", name).lstrip(".-")[:MAX_FOLDER_NAME].rstrip(".-")
    return folder or "suite"


def default_out(name: str) -> Path:
    """`runs/<safe name>`: where `benchsuite run` writes when no --out is given."""
    return RUNS_FOLDER / safe_folder_name(name)


def shell_command(words: Sequence[str | Path]) -> str:
    """A command line that a POSIX shell splits back into exactly `words` (and runs nothing else)."""
    return shlex.join(str(word) for word in words)


def check_out_folder(out: Path) -> None:
    """Refuse, before any work, an output folder that cannot be made or written: one that is a
    file or lies under one, or whose nearest existing folder this process may not write."""
    existing = out
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        where = "it is a file" if existing == out else f"{existing} is not a folder"
        raise BenchsuiteError(f"output folder {out}: {where}; give a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "it is" if existing == out else f"{existing} is"
        raise BenchsuiteError(f"output folder {out}: {where} not writable; give a folder you may write")


def make_folder(out: Path) -> list[Path]:
    """Create `out` with its missing parents; return the folders created, deepest first (a failed
    run removes them again if they stayed empty: remove_empty_folders)."""
    created, folder = [], out
    while not folder.exists() and folder.parent != folder:
        created.append(folder)
        folder = folder.parent
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise BenchsuiteError(f"output folder {out}: cannot create it ({error.strerror or error})") from None
    return created


def remove_empty_folders(folders: Sequence[Path]) -> None:
    """Remove `folders` (deepest first) while they are empty; stop at the first that is not."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return
