"""Run `benchsuite ...` inside the test process with click's CliRunner, answering like the
subprocess it replaces: a `subprocess.CompletedProcess` with returncode, stdout and stderr.

A subprocess pays Python, click and (for most commands) torch imports every time, seconds of CPU
per call; in-process the modules are loaded once. What a fresh process would have fresh, each call
gets fresh and gives back afterwards: the working directory; the environment (variables a call
sets, and any that the command or a library it imports sets); warning filters (`main` adds one);
torch's thread count (the engine sets and restores it; a failure half-way must not leak); the
cached plugin registry; and the two rich consoles of benchsuite.cli,
built for the captured streams as a process with piped output builds them at import (no colour,
width 80). A run records the words it was given (click's args), not this process's sys.argv.

Tests where the process boundary is the point stay real processes: kill -9 and resume
(test_run.py), plugins discovered through installed entry points (test_plugins.py), and what
`import benchsuite` costs (test_cli_imports.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import traceback
import warnings
from pathlib import Path

import torch
from click.testing import CliRunner
from rich.console import Console

from benchsuite import cli as cli_module
from benchsuite.engine import threads
from benchsuite.plugins import default_registry


def cli(
    *args: str | Path, cwd: Path | str | None = None, timeout: float = 600, **variables: str
) -> subprocess.CompletedProcess:
    """`benchsuite ARGS` run in this process, in folder `cwd`, with environment `variables` set;
    past `timeout` seconds it raises subprocess.TimeoutExpired, as subprocess.run would."""
    words = [str(a) for a in args]

    def expired(signum, frame):
        raise subprocess.TimeoutExpired(["benchsuite", *words], timeout)

    environment = dict(os.environ)
    saved = (
        os.getcwd(),
        torch.get_num_threads(),
        threads.ENABLED,
        cli_module.console,
        cli_module.stdout,
    )
    default_registry.cache_clear()  # a process loads its plugins (and reads the environment) once
    runner = CliRunner()
    alarm = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        if cwd is not None:
            os.chdir(cwd)
        with warnings.catch_warnings(), runner.isolation(env=variables) as (out, err, _):
            # the consoles see the captured streams, as a process's see its pipes at import
            cli_module.console, cli_module.stdout = Console(stderr=True), Console()
            code = _invoke(words)
            sys.stdout.flush()
            sys.stderr.flush()
            out_text = out.getvalue().decode()
            err_text = err.getvalue().decode("utf-8", "backslashreplace")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, alarm)
        os.chdir(saved[0])
        _restore(environment)
        torch.set_num_threads(saved[1])
        threads.ENABLED, cli_module.console, cli_module.stdout = saved[2:]
        default_registry.cache_clear()
    return subprocess.CompletedProcess(["benchsuite", *words], code, out_text, err_text)


def _restore(environment: dict[str, str]) -> None:
    """os.environ as it was: what the command (or a library it imported first) set goes with it."""
    for key in set(os.environ) - set(environment):
        del os.environ[key]
    for key, value in environment.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


def _invoke(words: list[str]) -> int:
    """Exit code of `main(words)` as the interpreter would report it; an uncaught exception prints
    its traceback on stderr and gives 1, as it would in a process."""
    try:
        cli_module.main.main(args=words, prog_name="benchsuite")
    except SystemExit as stop:
        if stop.code is None:
            return 0
        if isinstance(stop.code, int):
            return stop.code
        print(stop.code, file=sys.stderr)
        return 1
    except subprocess.TimeoutExpired:
        raise
    except Exception:  # noqa: BLE001 - a process would print it and exit 1
        traceback.print_exc(file=sys.stderr)
        return 1
    return 0
