"""The unfinished cells of a run as units: cells that must run together, in one process, in order.

Two kinds of togetherness, both about speed (results never depend on how cells are grouped):
- gradient cells that may train their networks in one stack (same optimizer entry, architecture,
  dataset and N; they differ in class pair and training set): engine.training.train_populations;
- baseline cells that share a seed and differ only in N: the sampler may reuse what it decided at
  a smaller N (G&C's decision cache, engine/reuse.py, lives in the process), so they run in N order
  in one process, whichever executor spreads the units.
"""

from __future__ import annotations

import json

from benchsuite.resolved import Cell


def training_group_key(cell: Cell) -> str | None:
    """Gradient cells with equal keys may train their networks in one stack (train_populations):
    same optimizer entry (and values: a tuned entry's placeholders until tuned), architecture,
    dataset and N; they differ in class pair and training set."""
    if cell.role == "baseline":
        return None
    return json.dumps(
        [cell.entry.to_json(), dict(cell.entry.hyperparameters), cell.architecture.to_json(), cell.dataset, cell.n_train],
        sort_keys=True, default=str,
    )  # fmt: skip


def nested_key(cell: Cell) -> str | None:
    """Baseline cells with equal keys are one sampler stream at several N (the cell seed leaves N
    out): their training sets are nested, so a sampler may reuse decisions across them."""
    if cell.role != "baseline":
        return None
    identity = {k: v for k, v in cell.identity.items() if k != "n_train"}
    return json.dumps(identity, sort_keys=True, default=str)


def work_units(todo: list[Cell], group_cells: bool = True) -> tuple[tuple[Cell, ...], ...]:
    """The unfinished cells as units an executor runs whole, in one process: gradient cells that
    can share a stack together (training_group_key), baseline cells of one stream in N order
    (nested_key), every other cell alone; units in suite order."""
    groups: dict[object, list[Cell]] = {}
    for index, cell in enumerate(todo):
        key = None
        if group_cells:
            key = nested_key(cell) if cell.role == "baseline" else training_group_key(cell)
        groups.setdefault(("alone", index) if key is None else key, []).append(cell)
    units = [tuple(sorted(g, key=lambda c: c.n_train) if g[0].role == "baseline" else g) for g in groups.values()]
    return tuple(units)


def unit_label(unit: tuple[Cell, ...]) -> str:
    """A unit in a message: its first cell and how many it holds."""
    first = unit[0]
    more = f" and {len(unit) - 1} more cell(s)" if len(unit) > 1 else ""
    return (
        f"{first.entry.label} on {first.dataset} {first.classes[0]} vs {first.classes[1]} "
        f"N={first.n_train} training set {first.training_set_seed}{more}"
    )


def unit_memory(unit: tuple[Cell, ...], registry, device: str) -> int | None:
    """Bytes a unit plans to hold on `device` at once (benchsuite.limits.cell_memory): the sum
    over cells trained in one stack, the largest cell of a sequence; None if not estimable."""
    from benchsuite.architectures.build import parameter_count
    from benchsuite.limits import cell_memory

    sizes = []
    for cell in unit:
        shape = registry.dataset(cell.dataset).input_shape
        if shape is None:
            return None
        try:
            parameters = parameter_count(
                registry.architecture(cell.architecture.name), shape, cell.architecture.width,
                cell.architecture.depth,
            )  # fmt: skip
        except Exception:  # noqa: BLE001 - a plugin that cannot build on meta: not estimated
            return None
        sizes.append(cell_memory(parameters, cell.entry, cell.n_train, device))
    return sum(sizes) if unit[0].role != "baseline" else max(sizes)
