"""Tuned cells (docs/tuning.md): their values chosen where they run, before their networks train.

Tuning runs in the process that runs the unit (here or a worker), on the cell's own validation
split, so a tuned cell is as self-contained as any other: the executor, the worker count and a
resume change no choice. What the store keeps of it travels back as plain data in the outcome.
"""

from __future__ import annotations

from benchsuite.execution.cells import CellContext, cell_module
from benchsuite.resolved import Cell
from benchsuite.store import TuningRecord, TuningTrial
from benchsuite.tasks import build_validation, load_splits
from benchsuite.tuning import TuningResult, tune_cell


def tune_unit(unit: tuple[Cell, ...], context: CellContext) -> tuple[tuple[Cell, ...], dict[str, TuningRecord]]:
    """The unit with every tuned cell's values chosen, and what the store keeps of each cell's
    tuning, by cell id. Untuned cells pass unchanged."""
    resolved, records = [], {}
    for cell in unit:
        if not cell.tuned:
            resolved.append(cell)
            continue
        task = context.task(cell)
        spec = context.registry.dataset(cell.dataset)
        validation = build_validation(
            spec, load_splits(spec, context.data), task, cell.tuning.validation_per_class, context.device
        )
        settings = cell.entry.settings
        result = tune_cell(
            cell, task, validation, cell_module(cell, task, context.registry, context.device),
            context.registry.optimizer(cell.entry.name), context.registry.prior(settings.prior), context.device,
        )  # fmt: skip
        records[cell.cell_id] = tuning_record(cell, result)
        resolved.append(cell.with_values(result.values))
    return tuple(resolved), records


def tuning_record(cell: Cell, result: TuningResult) -> TuningRecord:
    """What the store keeps of a cell's tuning: the protocol and search spaces, the choice, the
    validation images and every trial."""
    trials = [
        TuningTrial(t.index, t.values, t.networks, t.fitted, t.validation_accuracy, t.index == result.chosen, t.seconds)
        for t in result.trials
    ]
    return TuningRecord(cell.identity["tuning"], result.values, result.validation_indices, trials)
