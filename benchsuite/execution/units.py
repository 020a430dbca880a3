"""The unfinished cells of a run as units: cells that must run together, in one process, in order.

Two kinds of togetherness, both about speed (results never depend on how cells are grouped):
- gradient cells that may train their networks in one stack (same optimizer entry, architecture,
  dataset and N; they differ in class pair and training set): engine.training.train_populations;
- baseline cells that share a seed and differ only in N: the sampler may reuse what it decided at
  a smaller N (G&C's decision cache, engine/reuse.py, lives in the process), so they run in N order
  in one process, whichever executor spreads the units.

Togetherness has a price: a unit's gradient cells are tuned, then trained, then stored together,
so none is stored before the last is trained, and a run stopped mid-unit loses all of it (twelve
Muon cells of the zoo suite at N = 32 are two hours of a worker). So only cells that can share a
stack are grouped (stack_sharing): the others are units of one, stored one by one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import lru_cache

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


def stack_sharing(registry) -> Callable[[Cell], bool]:
    """Whether a gradient cell's networks can train in one stack with other cells': the engine's
    own rule (engine.training.choose_path gives the "mlp" path, the one train_populations stacks),
    asked of the module built on the meta device; an architecture that cannot be built so is
    taken as able."""
    from benchsuite.architectures.build import bias_for, build_module
    from benchsuite.engine.training import choose_path

    @lru_cache(maxsize=None)
    def shares(optimizer: str, name: str, dataset: str, width, depth, bias) -> bool:
        import torch

        shape = registry.dataset(dataset).input_shape
        if shape is None:
            return True
        try:
            with torch.device("meta"):
                module = build_module(registry.architecture(name), shape, width, depth, bias)
        except Exception:  # noqa: BLE001 - a plugin that cannot build on meta: grouped as before
            return True
        return choose_path(module, registry.optimizer(optimizer)) == "mlp"

    def cell_shares(cell: Cell) -> bool:
        a = cell.architecture
        return shares(cell.entry.name, a.name, cell.dataset, a.width, a.depth, bias_for(a.bias, cell.role))

    return cell_shares


def work_units(
    todo: list[Cell], group_cells: bool = True, shares_stacks: Callable[[Cell], bool] | None = None
) -> tuple[tuple[Cell, ...], ...]:
    """The unfinished cells as units an executor runs whole, in one process: gradient cells that
    can share a stack together (training_group_key; with `shares_stacks`, only cells it says can,
    stack_sharing), baseline cells of one stream in N order (nested_key), every other cell alone;
    units in suite order."""
    groups: dict[object, list[Cell]] = {}
    for index, cell in enumerate(todo):
        key = None
        if group_cells and cell.role == "baseline":
            key = nested_key(cell)
        elif group_cells and (shares_stacks is None or shares_stacks(cell)):
            key = training_group_key(cell)
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
