"""The run's progress on a terminal: rich bars over cells and for the cell in flight."""

from __future__ import annotations

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
    """Rich display: one bar over cells, one for the cell in flight (accepted, rate, ETA)."""

    def __init__(self, console: Console):
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
        self.current = None
        self.unit = ""
        self.started = 0.0

    def start_run(self, total: int, skipped: int) -> None:
        self.display.start()
        if skipped:
            self.display.console.print(f"resuming: {skipped} of {total} cells already done")
        self.cells = self.display.add_task("cells", total=total, completed=skipped, rate="")

    def start_cell(self, cell, index: int, target: int, unit: str) -> None:
        label = f"{cell.dataset} {cell.classes[0]}v{cell.classes[1]} N={cell.n_train} s={cell.training_set_seed} {cell.architecture_label} {cell.entry.label}"
        if self.current is not None:
            self.display.remove_task(self.current)
        self.current = self.display.add_task(terminal_text(label), total=target, rate="")
        self.unit, self.started = unit, time.perf_counter()

    def update_cell(self, accepted: int, work: int) -> None:
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        rate = f"{work / elapsed:,.0f} {self.unit}/s"
        self.display.update(self.current, completed=accepted, rate=rate)

    def finish_cell(self, outcome) -> None:
        population = outcome.population
        self.display.update(self.current, completed=population.size)
        self.display.advance(self.cells)

    def finish_run(self) -> None:
        if self.current is not None:
            self.display.remove_task(self.current)
            self.current = None
        self.display.stop()
