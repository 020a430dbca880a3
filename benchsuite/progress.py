"""The run's progress: rich bars over cells and for the cell in flight on a terminal (and over
the probes of `benchsuite estimate`), a plain line per finished cell in a log file."""

from __future__ import annotations

import contextlib
import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress

from benchsuite.escaping import terminal_text
from benchsuite.runner import Progress


class RichCellProgress(Progress):
    """Rich display: one bar over cells, one per cell in flight (accepted, rate, ETA); with worker
    processes several cells are in flight at once, each with its own bar."""

    def __init__(self, console: Console, first_line: str = ""):
        self.first_line = first_line  # printed once every check has passed and the run starts
        self.display = RichProgress(
            SpinnerColumn(),
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}", markup=False),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.cells = None
        self.current = None  # the cell started last
        self.bars: dict[str, tuple] = {}  # cell id -> (task, unit, started)
        self.notes: list[str] = []  # said after the first line, when the run starts

    def note(self, line: str) -> None:
        self.notes.append(line)

    def start_run(self, total: int, skipped: int) -> None:
        if self.first_line:
            self.display.console.print(self.first_line, highlight=False, markup=False, soft_wrap=True)
        self.display.start()
        for line in opening_notes(self.notes, total, skipped):
            self.display.console.print(line, highlight=False, markup=False, soft_wrap=True)
        self.cells = self.display.add_task("cells", total=total, completed=skipped, rate="")

    def start_cell(self, cell, index: int, target: int, unit: str) -> None:
        label = cell_label(cell)
        self._remove(cell.cell_id)
        if len(self.bars) >= MAX_BARS:  # a cell whose end we missed (a worker died): drop the oldest
            self._remove(next(iter(self.bars)))
        task = self.display.add_task(terminal_text(label), total=target, rate="")
        self.bars[cell.cell_id] = (task, unit, time.perf_counter())
        self.current = cell.cell_id

    def update_cell(self, accepted: int, work: int, cell=None) -> None:
        bar = self.bars.get(cell.cell_id if cell is not None else self.current)
        if bar is None:
            return
        task, unit, started = bar
        elapsed = max(time.perf_counter() - started, 1e-9)
        self.display.update(task, completed=accepted, rate=f"{work / elapsed:,.0f} {unit}/s")

    def finish_cell(self, outcome) -> None:
        self._remove(outcome.cell.cell_id)
        self.display.advance(self.cells)

    def finish_run(self) -> None:
        for cell_id in list(self.bars):
            self._remove(cell_id)
        self.display.stop()

    def _remove(self, cell_id: str) -> None:
        bar = self.bars.pop(cell_id, None)
        if bar is not None:
            self.display.remove_task(bar[0])


MAX_BARS = 64


def opening_notes(notes: list[str], total: int, skipped: int) -> list[str]:
    """What a run says as it starts: the runner's notes (a suite of another version resumed),
    else, when it resumes, how many cells are already done."""
    if notes or not skipped:
        return list(notes)
    return [f"resuming: {skipped} of {total} cells already done"]


def cell_label(cell) -> str:
    """A cell in one line: task, training set, architecture, method."""
    return (
        f"{cell.dataset} {cell.classes[0]}v{cell.classes[1]} N={cell.n_train} s={cell.training_set_seed} "
        f"{cell.architecture_label} {cell.entry.label}"
    )


class LogProgress(Progress):
    """For a console that is not a terminal (output redirected to a log, a batch job), where rich
    draws no bars: a plain line per finished cell, with the count, the cell's own time and the
    run's. No time left: cells differ by orders of magnitude and run grouped by method, so the
    pace so far says little about the rest (`benchsuite estimate` measures it)."""

    def __init__(self, console: Console, first_line: str = "", clock=time.monotonic):
        self.console = console
        self.first_line = first_line
        self.clock = clock
        self.notes: list[str] = []
        self.total = self.done = 0
        self.started = 0.0

    def note(self, line: str) -> None:
        self.notes.append(line)

    def start_run(self, total: int, skipped: int) -> None:
        for line in filter(None, [self.first_line, *opening_notes(self.notes, total, skipped)]):
            self._print(line)
        self.total, self.done, self.started = total, skipped, self.clock()

    def finish_cell(self, outcome) -> None:
        self.done += 1
        status = "" if outcome.status == "ok" else f" ({outcome.status})"
        self._print(
            f"[{self.done}/{self.total}] {terminal_text(cell_label(outcome.cell))}: {outcome.size} networks{status}, "
            f"{outcome.seconds:,.0f} s; {_duration(self.clock() - self.started)} into the run"
        )

    def _print(self, line: str) -> None:
        self.console.print(line, highlight=False, markup=False, soft_wrap=True)


def _duration(seconds: float) -> str:
    """12s, 7m, 3h05m: a log line's durations, no finer than they are meaningful."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    hours, minutes = divmod(whole // 60, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m"


class QuietProgress(Progress):
    """No bars: only `first_line` and the run's notes (a grown suite resumed), once the run
    starts (a run refused before that prints its error alone)."""

    def __init__(self, console: Console, first_line: str):
        self.console = console
        self.first_line = first_line
        self.notes: list[str] = []

    def note(self, line: str) -> None:
        self.notes.append(line)

    def start_run(self, total: int, skipped: int) -> None:
        for line in (self.first_line, *self.notes):
            self.console.print(line, highlight=False, markup=False, soft_wrap=True)


@contextlib.contextmanager
def probe_progress(console: Console):
    """A bar over `benchsuite estimate`'s probes: yields progress(label, done, total)."""
    display = RichProgress(
        SpinnerColumn(), TextColumn("{task.description}", markup=False), BarColumn(),
        MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=True,
    )  # fmt: skip
    bar = None

    def progress(label: str, done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = display.add_task("probes", total=total)
        display.update(bar, completed=done, description=terminal_text(f"probe: {label}"))

    with display:
        yield progress
