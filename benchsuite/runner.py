"""The runner: expands a suite into cells, runs the unfinished ones, stores each cell whole.

A notebook calls `run_suite(suite, out)`; the CLI is a thin layer over it. Resuming is free:
a cell whose id is already in the database is skipped, so a killed run loses at most the cell
that was in flight, or the group of gradient cells being trained together (`group_cells`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from benchsuite.engine.threads import one_cpu_thread
from benchsuite.environment import capture_environment
from benchsuite.errors import BenchsuiteError
from benchsuite.leaderboard import leaderboard_from_store
from benchsuite.metrics import METRICS
from benchsuite.plugins import Registry, default_registry
from benchsuite.records import DataOptions, Population, SamplingRequest
from benchsuite.stacked import evaluate
from benchsuite.store import NetworkResult, Store
from benchsuite.suite import FULL_BATCH, Cell, Suite, bias_for, build_module, expand
from benchsuite.tasks import TaskCache, dataset_files, load_splits


def resolve_device(name: str) -> torch.device:
    """`auto` is CUDA when present, else CPU; an explicit CUDA request without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise BenchsuiteError(f"device {name!r} requested but CUDA is not available (use device: auto or cpu)")
    if name.startswith("cuda") or name == "auto":
        # Acceptance is exact in float32: TF32 would make a network's logits depend on how many
        # networks share a kernel call, so a fit could flip between sampler and re-check.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    if name == "mps" and not torch.backends.mps.is_available():
        raise BenchsuiteError("device 'mps' requested but MPS is not available")
    return torch.device(name)


@dataclass
class CellOutcome:
    cell: Cell
    population: Population
    train_acc: torch.Tensor
    test_acc: torch.Tensor
    metrics: dict[str, torch.Tensor]
    train_ties: torch.Tensor  # per network: training points with two equal logits
    test_ties: torch.Tensor  # per network: test points with two equal logits
    train_indices: list[int]  # the task's training images, positions in the training split
    n_test: int


class Progress:
    """What the runner reports; the CLI plugs a rich display in, tests and notebooks may not."""

    def start_run(self, total: int, skipped: int) -> None: ...
    def start_cell(self, cell: Cell, index: int, target: int, unit: str) -> None: ...
    def update_cell(self, accepted: int, work: int) -> None: ...
    def finish_cell(self, outcome: CellOutcome) -> None: ...
    def finish_run(self) -> None: ...


def _task(cell: Cell, tasks: TaskCache, registry: Registry, data: DataOptions, device):
    return tasks.get(
        registry.dataset(cell.dataset), data, cell.classes, cell.n_train, cell.training_set_seed,
        device, cell.training_draw, cell.class_pair_seed,
    )  # fmt: skip


def cell_module(cell: Cell, task, registry: Registry, device: torch.device) -> nn.Module:
    """The cell's architecture as an ordinary module for the task's input shape, on `device`."""
    arch_spec = registry.architecture(cell.architecture["name"])
    return build_module(
        arch_spec, task.input_shape, cell.architecture["width"], cell.architecture["depth"],
        bias_for(cell.architecture["bias"], cell.role),
    ).to(device)


def training_request(cell: Cell, task, registry: Registry, module: nn.Module, device, progress):
    """What train_population(s) needs for a gradient cell."""
    from benchsuite.engine.training import PopulationRequest, TrainingSettings
    from benchsuite.schedules import from_record

    settings = cell.entry["settings"]
    training = TrainingSettings(
        batch_size=task.n_train if settings["batch_size"] == FULL_BATCH else settings["batch_size"],
        epochs=settings["epochs"],
        batch_order=settings["batch_order"],
        max_networks=settings["max_networks"],
        tie_rule=cell.tie_rule,
        schedule=from_record(settings.get("schedule")),
    )
    return PopulationRequest(
        module, task.x_train, task.y_train, registry.optimizer(cell.entry["name"]),
        dict(cell.entry["hyperparameters"]), registry.prior(settings["prior"]), training,
        cell.entry["models"], cell.seed, device, progress,
    )  # fmt: skip


def training_group_key(cell: Cell) -> str | None:
    """Gradient cells with equal keys may train their networks in one stack (train_populations):
    same optimizer entry, architecture, dataset and N; they differ in class pair and training set."""
    if cell.role == "baseline":
        return None
    return json.dumps(
        [cell.entry, cell.architecture, cell.dataset, cell.n_train], sort_keys=True, default=str
    )


def produce_populations(
    cells: list[Cell], tasks: TaskCache, registry: Registry, data: DataOptions, device: torch.device
) -> dict[str, tuple[Population, nn.Module]]:
    """Populations of several gradient cells, trained together where their networks can share a
    stack (engine.training.train_populations: each population equals the one trained alone)."""
    from benchsuite.engine.training import train_populations

    modules, requests = [], []
    for cell in cells:
        task = _task(cell, tasks, registry, data, device)
        module = cell_module(cell, task, registry, device)
        modules.append(module)
        requests.append(training_request(cell, task, registry, module, device, None))
    populations = train_populations(requests)
    return {
        cell.cell_id: (population, module)
        for cell, population, module in zip(cells, populations, modules)
    }


def produce_population(
    cell: Cell, task, registry: Registry, device: torch.device, progress: Callable | None
) -> tuple[Population, nn.Module]:
    """Run one cell's optimizer or sampler: its interpolating networks and the module they fill."""
    module = cell_module(cell, task, registry, device)
    settings = cell.entry["settings"]
    if cell.role == "baseline":
        sampler = registry.sampler(cell.entry["name"])
        request = SamplingRequest(
            module=module,
            x_train=task.x_train,
            y_train=task.y_train,
            prior=registry.prior(settings["prior"]),
            target=cell.entry["models"],
            max_candidates=settings["max_candidates"],
            seed=cell.seed,
            device=device,
            options=dict(cell.entry["hyperparameters"]),
            progress=progress,
            tie_rule=cell.tie_rule,
        )
        return sampler.sample(request), module
    from benchsuite.engine.training import train_population

    request = training_request(cell, task, registry, module, device, progress)
    population = train_population(
        request.module, request.x_train, request.y_train, request.optimizer,
        request.hyperparameters, request.prior, request.settings, request.target, request.seed,
        request.device, request.progress,
    )  # fmt: skip
    return population, module


def run_cell(
    cell: Cell, tasks: TaskCache, registry: Registry, data: DataOptions, device: torch.device,
    progress: Progress, metrics: tuple[str, ...] = (),
    produced: tuple[Population, nn.Module] | None = None,
) -> CellOutcome:
    """One cell: its population (or `produced`, trained beforehand with others), checked and
    evaluated on the test set."""
    task = _task(cell, tasks, registry, data, device)
    started = time.perf_counter()
    if produced is not None:
        population, module = produced
        progress.update_cell(population.size, population.candidates_tried)
    else:
        population, module = produce_population(cell, task, registry, device, progress.update_cell)
    if population.seconds <= 0:
        population.seconds = time.perf_counter() - started
    module.eval()
    with one_cpu_thread(device):
        return _evaluate(cell, task, population, module, metrics)


def _evaluate(cell: Cell, task, population: Population, module: nn.Module, metrics) -> CellOutcome:
    if population.size:
        state = (module, population.parameters, population.buffers)
        train_acc, train_ties = evaluate(*state, task.x_train, task.y_train, cell.tie_rule)
        test_acc, test_ties = evaluate(*state, task.x_test, task.y_test, cell.tie_rule)
    else:
        train_acc = test_acc = torch.zeros(0, dtype=torch.float64)
        train_ties = test_ties = torch.zeros(0, dtype=torch.long)
    if bool((train_acc < 1).any()):
        # the host re-checks every network it stores: a plugin's claim of interpolation is not enough
        raise BenchsuiteError(
            f"{cell.entry['label']} returned networks that do not fit the training set "
            f"(train accuracy {train_acc.min().item():.3f}); refusing to store them"
        )
    values = {
        name: METRICS[name](module, population.parameters, population.buffers, task).detach().cpu()
        for name in metrics
        if population.size
    }
    return CellOutcome(
        cell, population, train_acc.cpu(), test_acc.cpu(), values, train_ties.cpu(),
        test_ties.cpu(), task.train_indices.tolist(), int(task.x_test.shape[0]),
    )  # fmt: skip


def cell_record(outcome: CellOutcome, run_id: int, suite_id: str, class_names: tuple, device: torch.device) -> dict:
    cell, population = outcome.cell, outcome.population
    names = [class_names[c] if c < len(class_names) else str(c) for c in cell.classes]
    return {
        "cell_id": cell.cell_id,
        "run_id": run_id,
        "suite_id": suite_id,
        "dataset": cell.dataset,
        "classes": ",".join(str(c) for c in cell.classes),
        "class_names": " vs ".join(names),
        "n_train": cell.n_train,
        "training_set_seed": cell.training_set_seed,
        "training_draw": cell.training_draw,  # with class_pair_seed: stored in training_indices
        "class_pair_seed": cell.class_pair_seed,
        "n_test": outcome.n_test,
        "architecture": cell.architecture_label,
        "architecture_name": cell.architecture["name"],
        "width": str(cell.architecture["width"]),
        "depth": str(cell.architecture["depth"]),
        "optimizer": cell.entry["label"],
        "optimizer_name": cell.entry["name"],
        "role": cell.role,
        "prior": cell.entry["settings"]["prior"],
        "hyperparameters": _json({**cell.entry["settings"], **cell.entry["hyperparameters"]}),
        "models_requested": cell.entry["models"],
        "candidates_tried": int(population.candidates_tried),
        "epochs": population.epochs,
        "seconds": float(population.seconds),
        "exhausted": int(bool(population.exhausted)),
        "seed": cell.seed,
        "device": str(device),
    }


def network_results(outcome: CellOutcome) -> list[NetworkResult]:
    """The stored rows of a cell's networks, in population order."""
    columns = zip(
        outcome.population.found_at.tolist(),
        outcome.train_acc.tolist(),
        outcome.test_acc.tolist(),
        outcome.train_ties.tolist(),
        outcome.test_ties.tolist(),
    )
    chains = outcome.population.chains
    chains = chains.tolist() if chains is not None else [None] * outcome.population.size
    return [
        NetworkResult(
            found_at=int(found_at),
            train_acc=float(train_acc),
            test_acc=float(test_acc),
            metrics={m: float(v[k]) for m, v in outcome.metrics.items()},
            train_ties=int(train_ties),
            test_ties=int(test_ties),
            chain=chains[k],
        )
        for k, (found_at, train_acc, test_acc, train_ties, test_ties) in enumerate(columns)
    ]


def _json(value) -> str:
    return json.dumps(value, sort_keys=True)


def preflight(suite: Suite, registry: Registry, data: DataOptions) -> dict[str, list[dict]]:
    """Load every dataset and check every class is large enough for the largest N, before anything
    is stored (a failure after the first cell would leave a half-run folder). Returns the files
    each dataset was read from (path, bytes, sha256): the run's data provenance."""
    files = {}
    for index, task in enumerate(suite.resolved["tasks"]):
        spec = registry.dataset(task["dataset"])
        splits = load_splits(spec, data)
        files[spec.name] = dataset_files(spec, data)
        counts = torch.bincount(splits.train_labels, minlength=spec.num_classes).tolist()
        largest = max(task["n_train"])
        needed = spec.holdout_per_class + largest // 2
        for pair in task["classes"]:
            for label in pair:
                have = counts[label] if label < len(counts) else 0
                if have < needed:
                    raise BenchsuiteError(
                        f"{suite.path}: tasks[{index}]: {spec.name} class {label} has {have} training images "
                        f"but N={largest} needs {needed} ({spec.holdout_per_class} held out + {largest // 2} "
                        "for training); lower n_train"
                    )
    return files


def run_suite(
    suite: Suite,
    out: str | Path,
    registry: Registry | None = None,
    progress: Progress | None = None,
    device: str | None = None,
    command: str = "",
    group_cells: bool = True,
) -> list[dict]:
    """Run every unfinished cell of `suite` into `out`; return the leaderboard rows.

    Writes only `out/results.sqlite`: rendering the rows (files, terminal) is the caller's choice
    (benchsuite.report.write_leaderboard; the CLI writes every format).

    group_cells: train gradient cells that differ only in class pair and training set together
    (identical results; False runs cell by cell, as the benchmarks' reference does)."""
    registry = registry or default_registry()
    progress = progress or Progress()
    out = Path(out)
    torch_device = resolve_device(device or suite.resolved["device"])
    data = DataOptions(
        root=Path(suite.resolved["data"]["root"]).expanduser() if suite.resolved["data"]["root"] else None,
        download=suite.resolved["data"]["download"],
    )
    cells = expand(suite)
    data_files = preflight(suite, registry, data)
    environment = {**capture_environment(torch_device, registry), "data_files": data_files}
    with Store(out / "results.sqlite") as store:
        store.check_network_counts()
        finished = store.finished_cell_ids()
        todo = [c for c in cells if c.cell_id not in finished]
        run_id = store.start_run(suite.suite_id, suite.resolved, environment, command)
        tasks = TaskCache()
        progress.start_run(len(cells), len(cells) - len(todo))
        produced: dict[str, tuple[Population, nn.Module]] = {}
        for index, cell in enumerate(todo):
            unit = "candidates" if cell.role == "baseline" else "networks"
            progress.start_cell(cell, index, cell.entry["models"], unit)
            key = training_group_key(cell) if group_cells else None
            if key is not None and cell.cell_id not in produced:
                # this cell and the unfinished cells it can share a stack with, trained at once
                # (a killed run then loses the group in flight, not just the cell)
                group = [c for c in todo[index:] if training_group_key(c) == key]
                produced.update(produce_populations(group, tasks, registry, data, torch_device))
            outcome = run_cell(
                cell, tasks, registry, data, torch_device, progress, tuple(suite.resolved["metrics"]),
                produced.pop(cell.cell_id, None),
            )  # fmt: skip
            spec = registry.dataset(cell.dataset)
            record = cell_record(outcome, run_id, suite.suite_id, spec.class_names, torch_device)
            store.add_cell(
                record, network_results(outcome), outcome.train_indices, outcome.population.estimates
            )
            progress.finish_cell(outcome)
        store.finish_run(run_id)
        progress.finish_run()
        return leaderboard_from_store(store, suite.reference_baseline)
