"""Output folders and shell commands built from names a suite file chose.

A suite travels between people, so its name is untrusted: as a folder name it must not climb out
of `runs/` or point at an absolute path, and as part of a printed command it must not put a
command into a reader's shell.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from pathlib import Path

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
