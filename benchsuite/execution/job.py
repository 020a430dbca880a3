"""Running a unit of cells, here or in another process.

`run_unit` runs a unit with this process's plugins and tasks. `UnitJob` is the same as a small
picklable record, for the `processes` and `ray` executors: a worker process receives it once,
rebuilds the plugin registry (the installed plugins, plus any the run was given that are
importable by name), the task cache and the device from it, and keeps them for as long as it
lives, so the G&C decision cache (nested reuse across N) serves every unit that worker runs.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace

from benchsuite.engine.threads import share_cpus
from benchsuite.errors import BenchsuiteError
from benchsuite.execution.cells import (
    Budget,
    CellContext,
    CellOutcome,
    CellTimedOut,
    Report,
    ignore,
    produce_populations,
    resolve_device,
    run_cell,
)
from benchsuite.execution.tuned import tune_unit
from benchsuite.plugins import Registry, default_registry, load_registry
from benchsuite.records import DataOptions
from benchsuite.resolved import Cell


def run_unit(unit: tuple[Cell, ...], context: CellContext, report: Report = ignore) -> Iterator[CellOutcome]:
    """A unit in this process: its tuned cells' values chosen (execution.tuned), its gradient
    cells trained in one stack (one budget for all of them, tuning included), then each cell
    checked, evaluated and yielded as it finishes; or its cells in order."""
    budget = Budget(context.max_seconds, len(unit))  # starts now: tuning counts against it
    try:
        with budget.enforced():
            unit, tunings = tune_unit(unit, context)
    except CellTimedOut:
        for cell in unit:
            yield budget.timed_out(cell, context.task(cell), context.device, "while tuning")
        return
    produced = {}
    if len(unit) > 1 and unit[0].role != "baseline":
        report(("start", unit[0].cell_id))
        try:
            with budget.enforced():
                produced = produce_populations(list(unit), context, budget, report)
        except CellTimedOut:
            for cell in unit:
                yield _with(budget.timed_out(cell, context.task(cell), context.device), tunings)
            return
    for cell in unit:
        report(("start", cell.cell_id))
        # a tuned cell alone keeps the budget its tuning started; others get their own
        own = budget if len(unit) == 1 and tunings else None
        yield _with(run_cell(cell, context, report, produced.pop(cell.cell_id, None), own), tunings)


def _with(outcome: CellOutcome, tunings: dict) -> CellOutcome:
    tuning = tunings.get(outcome.cell.cell_id)
    return outcome if tuning is None else replace(outcome, tuning=tuning)


@dataclass(frozen=True)
class UnitJob:
    """How to run units in another process: `job(unit, report)` yields the unit's outcomes.

    device: the device as asked ("auto" is resolved by each worker, on its own machine);
    plugins: (name, module) of plugins the run was given beyond the installed ones, imported
    by name in the worker; sys_path: where the run found them; cpu_threads: torch and G&C threads
    per worker when several share the CPUs (None: the worker's default); torch_threads: torch's
    alone, where it must differ (engine.threads.share_cpus)."""

    device: str
    data: DataOptions
    metrics: tuple[str, ...] = ()
    max_seconds: float | None = None
    plugins: tuple[tuple[str, str], ...] = ()
    sys_path: tuple[str, ...] = ()
    cpu_threads: int | None = None
    torch_threads: int | None = None  # None: cpu_threads (a forked worker: 1, share_cpus)

    def __call__(self, unit: tuple[Cell, ...], report: Report = ignore) -> Iterator[CellOutcome]:
        yield from run_unit(unit, worker_context(self), report)


_CONTEXTS: dict[UnitJob, CellContext] = {}


def worker_context(job: UnitJob) -> CellContext:
    """This process's context for `job`, built once (plugins, device, threads) and kept."""
    context = _CONTEXTS.get(job)
    if context is None:
        for entry in job.sys_path:
            if entry not in sys.path:
                sys.path.append(entry)
        if job.cpu_threads is not None:
            share_cpus(job.cpu_threads, job.torch_threads)
        registry = default_registry()
        if job.plugins:
            extra = [(name, importlib.import_module(module)) for name, module in job.plugins]
            registry = load_registry(extra=extra)
        context = CellContext(registry, job.data, resolve_device(job.device), job.metrics, job.max_seconds)
        _CONTEXTS[job] = context
    return context


def remote_job(registry: Registry, device: str, data: DataOptions, metrics=(), max_seconds=None) -> UnitJob:
    """The UnitJob of a run whose plugins are `registry`'s (remote_plugins)."""
    path = tuple(entry for entry in sys.path if entry)
    return UnitJob(device, data, tuple(metrics), max_seconds, remote_plugins(registry), path)


def remote_plugins(registry: Registry) -> tuple[tuple[str, str], ...]:
    """(name, module) of the registry's plugins that are neither built in nor installed (given
    to load_registry as `extra`): a worker imports them by name. A plugin that cannot be imported
    by name (a module object made in memory) cannot run elsewhere: a one-line error."""
    found = []
    for plugin in registry.plugins:
        if plugin.distribution != "local" or plugin.status != "loaded":
            continue
        module = sys.modules.get(plugin.module)
        spec = getattr(module, "__spec__", None)
        if module is None or spec is None or importlib.util.find_spec(plugin.module) is None:
            raise BenchsuiteError(
                f"plugin {plugin.name!r} (module {plugin.module!r}) is not importable by name, so worker "
                "processes cannot load it; install it as a distribution or use --executor local"
            )
        found.append((plugin.name, plugin.module))
    return tuple(found)
