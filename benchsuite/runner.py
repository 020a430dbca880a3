"""The runner: expands a suite into cells, runs the unfinished ones, stores each cell whole.

A notebook calls `run_suite(suite, out)`; the CLI is a thin layer over it. Resuming is free:
a cell whose id is already in the database is skipped, so a killed run loses at most the cell
that was in flight.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from benchsuite.environment import capture_environment
from benchsuite.errors import BenchsuiteError
from benchsuite.leaderboard import leaderboard_from_store
from benchsuite.metrics import METRICS
from benchsuite.plugins import Registry, default_registry
from benchsuite.records import DataOptions, Population, SamplingRequest
from benchsuite.report import write_leaderboard
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


def produce_population(
    cell: Cell, task, registry: Registry, device: torch.device, progress: Callable | None
) -> tuple[Population, nn.Module]:
    """Run one cell's optimizer or sampler: its interpolating networks and the module they fill."""
    arch_spec = registry.architecture(cell.architecture["name"])
    module = build_module(
        arch_spec, task.input_shape, cell.architecture["width"], cell.architecture["depth"],
        bias_for(cell.architecture["bias"], cell.role),
    ).to(device)
    settings = cell.entry["settings"]
    prior = registry.prior(settings["prior"])
    if cell.role == "baseline":
        sampler = registry.sampler(cell.entry["name"])
        request = SamplingRequest(
            module=module,
            x_train=task.x_train,
            y_train=task.y_train,
            prior=prior,
            target=cell.entry["models"],
            max_candidates=settings["max_candidates"],
            seed=cell.seed,
            device=device,
            options=dict(cell.entry["hyperparameters"]),
            progress=progress,
            tie_rule=cell.tie_rule,
        )
        return sampler.sample(request), module
    from benchsuite.engine.training import TrainingSettings, train_population

    optimizer = registry.optimizer(cell.entry["name"])
    training = TrainingSettings(
        batch_size=task.n_train if settings["batch_size"] == FULL_BATCH else settings["batch_size"],
        epochs=settings["epochs"],
        batch_order=settings["batch_order"],
        max_networks=settings["max_networks"],
        tie_rule=cell.tie_rule,
    )
    population = train_population(
        module, task.x_train, task.y_train, optimizer, dict(cell.entry["hyperparameters"]), prior,
        training, cell.entry["models"], cell.seed, device, progress,
    )  # fmt: skip
    return population, module


def run_cell(
    cell: Cell, tasks: TaskCache, registry: Registry, data: DataOptions, device: torch.device,
    progress: Progress, metrics: tuple[str, ...] = (),
) -> CellOutcome:
    task = tasks.get(
        registry.dataset(cell.dataset), data, cell.classes, cell.n_train, cell.training_set_seed,
        device, cell.training_draw, cell.class_pair_seed,
    )  # fmt: skip
    started = time.perf_counter()
    population, module = produce_population(cell, task, registry, device, progress.update_cell)
    if population.seconds <= 0:
        population.seconds = time.perf_counter() - started
    module.eval()
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
) -> list[dict]:
    """Run every unfinished cell of `suite` into `out`; return the leaderboard rows."""
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
        for index, cell in enumerate(todo):
            unit = "candidates" if cell.role == "baseline" else "networks"
            progress.start_cell(cell, index, cell.entry["models"], unit)
            outcome = run_cell(cell, tasks, registry, data, torch_device, progress, tuple(suite.resolved["metrics"]))
            spec = registry.dataset(cell.dataset)
            record = cell_record(outcome, run_id, suite.suite_id, spec.class_names, torch_device)
            store.add_cell(
                record, network_results(outcome), outcome.train_indices, outcome.population.estimates
            )
            progress.finish_cell(outcome)
        store.finish_run(run_id)
        progress.finish_run()
        rows = leaderboard_from_store(store, suite.reference_baseline)
    write_leaderboard(rows, out, title=f"Leaderboard: {suite.name}")
    return rows
