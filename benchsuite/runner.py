"""The runner: expands a suite into cells, runs the unfinished ones, stores each cell whole.

A notebook calls `run_suite(suite, out)`; the CLI is a thin layer over it. The unfinished cells
become units (work_units) that an executor plugin runs; this process stores each finished cell.
Resuming is free: a cell whose id is already in the database is skipped, so a killed run loses
at most the cells in flight (a unit of gradient cells trained together: `group_cells`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from benchsuite.architectures.build import bias_for, build_module
from benchsuite.engine.threads import one_cpu_thread
from benchsuite.environment import capture_environment
from benchsuite.errors import BenchsuiteError
from benchsuite.leaderboard import leaderboard_from_store
from benchsuite.plugins import Registry, default_registry
from benchsuite.records import (
    DataOptions,
    ExecutionPlan,
    MetricInput,
    MetricSpec,
    Population,
    SamplingRequest,
)
from benchsuite.resolved import Cell, Suite, expand
from benchsuite.stacked import evaluate
from benchsuite.store import NetworkResult, Store, TuningRecord, TuningTrial
from benchsuite.tasks import TaskCache, build_validation, dataset_files, load_splits
from benchsuite.tuning import TuningResult, tune_cell


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
    tuning: TuningResult | None = None  # how a tuned cell's values were chosen


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
    architecture = cell.architecture
    return build_module(
        registry.architecture(architecture.name), task.input_shape, architecture.width,
        architecture.depth, bias_for(architecture.bias, cell.role),
    ).to(device)  # fmt: skip


def training_request(cell: Cell, task, registry: Registry, module: nn.Module, device, progress):
    """What train_population(s) needs for a gradient cell."""
    from benchsuite.engine.training import PopulationRequest, TrainingSettings
    from benchsuite.schedules import from_record

    entry = cell.entry
    settings = entry.settings
    training = TrainingSettings(
        batch_size=settings.batch_size_for(task.n_train),
        epochs=settings.epochs,
        batch_order=settings.batch_order,
        max_networks=settings.max_networks,
        tie_rule=cell.tie_rule,
        schedule=from_record(settings.schedule),
    )
    return PopulationRequest(
        module, task.x_train, task.y_train, registry.optimizer(entry.name),
        dict(entry.hyperparameters), registry.prior(settings.prior), training,
        entry.models, cell.seed, device, progress,
    )  # fmt: skip


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


def tune_cells(
    cells: tuple[Cell, ...], tasks: TaskCache, registry: Registry, data: DataOptions, device: torch.device
) -> tuple[tuple[Cell, ...], dict[str, TuningResult]]:
    """The cells with every tuned cell's values chosen (tuning.tune_cell, on the validation split
    of its own held-out images), and each tuned cell's tuning by cell id. Untuned cells pass."""
    resolved, results = [], {}
    for cell in cells:
        if not cell.tuned:
            resolved.append(cell)
            continue
        task = _task(cell, tasks, registry, data, device)
        spec = registry.dataset(cell.dataset)
        validation = build_validation(spec, load_splits(spec, data), task, cell.tuning.validation_per_class, device)
        entry = cell.entry
        result = tune_cell(
            cell, task, validation, cell_module(cell, task, registry, device),
            registry.optimizer(entry.name), registry.prior(entry.settings.prior), device,
        )  # fmt: skip
        results[cell.cell_id] = result
        resolved.append(cell.with_values(result.values))
    return tuple(resolved), results


def tuning_record(outcome: CellOutcome) -> TuningRecord | None:
    """What the store keeps of a cell's tuning (None for an untuned cell)."""
    result, cell = outcome.tuning, outcome.cell
    if result is None:
        return None
    protocol = cell.identity["tuning"]
    trials = [
        TuningTrial(t.index, t.values, t.networks, t.fitted, t.validation_accuracy, t.index == result.chosen, t.seconds)
        for t in result.trials
    ]
    return TuningRecord(protocol, result.values, result.validation_indices, trials)


def work_units(todo: list[Cell], group_cells: bool = True) -> tuple[tuple[Cell, ...], ...]:
    """The unfinished cells as units an executor runs whole, in one process: gradient cells that
    can share a stack together (training_group_key), every other cell alone; in suite order."""
    units, placed = [], set()
    for index, cell in enumerate(todo):
        if cell.cell_id in placed:
            continue
        key = training_group_key(cell) if group_cells else None
        unit = [c for c in todo[index:] if training_group_key(c) == key] if key is not None else [cell]
        placed.update(c.cell_id for c in unit)
        units.append(tuple(unit))
    return tuple(units)


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
    entry = cell.entry
    if cell.role == "baseline":
        sampler = registry.sampler(entry.name)
        request = SamplingRequest(
            module=module,
            x_train=task.x_train,
            y_train=task.y_train,
            prior=registry.prior(entry.settings.prior),
            target=entry.models,
            max_candidates=entry.settings.max_candidates,
            seed=cell.seed,
            device=device,
            options=dict(entry.hyperparameters),
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
        return _evaluate(cell, task, population, module, [registry.metric(name) for name in metrics])


def _metric(metric: MetricSpec, cell: Cell, task, population: Population, module: nn.Module) -> torch.Tensor:
    """One metric of every network, checked: a plugin's wrong shape stops the cell with one line."""
    data = MetricInput(
        module=module, parameters=population.parameters, buffers=population.buffers,
        x_train=task.x_train, y_train=task.y_train, x_test=task.x_test, y_test=task.y_test,
        tie_rule=cell.tie_rule, role=cell.entry.role,
    )  # fmt: skip
    values = metric.compute(data)
    if not isinstance(values, torch.Tensor) or tuple(values.shape) != (population.size,):
        shape = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
        raise BenchsuiteError(f"metric {metric.name!r} returned {shape}; it must return one value per network, shape ({population.size},)")
    return values.detach().double().cpu()


def _evaluate(cell: Cell, task, population: Population, module: nn.Module, metrics: list[MetricSpec]) -> CellOutcome:
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
            f"{cell.entry.label} returned networks that do not fit the training set "
            f"(train accuracy {train_acc.min().item():.3f}); refusing to store them"
        )
    values = {metric.name: _metric(metric, cell, task, population, module) for metric in metrics if population.size}
    return CellOutcome(
        cell, population, train_acc.cpu(), test_acc.cpu(), values, train_ties.cpu(),
        test_ties.cpu(), task.train_indices.tolist(), int(task.x_test.shape[0]),
    )  # fmt: skip


def cell_plugins(cell: Cell, registry: Registry, metrics: tuple[str, ...] = ()) -> dict[str, str]:
    """The distribution and version of every plugin the cell uses ("optimizer sgd": "benchsuite
    0.1.0"): part of the cell's record, so results never silently mix plugin versions."""
    used = [
        ("dataset", cell.dataset), ("architecture", cell.architecture.name),
        ("prior", cell.entry.settings.prior),
        ("sampler" if cell.role == "baseline" else "optimizer", cell.entry.name),
        *(("metric", name) for name in metrics),
    ]  # fmt: skip
    origins = {}
    for kind, name in used:
        provider = registry.provider(kind, name)
        origins[f"{kind} {name}"] = " ".join(filter(None, (provider.distribution, provider.version)))
    return origins


def resume_problem(origins: dict[str, dict], cells: list[Cell], suite: Suite, registry: Registry) -> str:
    """Why the finished cells of a folder should not be mixed with this run's ('' if they may):
    they ran in another resolved suite, or with other versions of the plugins they used."""
    other_suites, other_plugins = set(), {}
    for cell in cells:
        stored = origins.get(cell.cell_id)
        if stored is None:
            continue
        if stored["suite_id"] != suite.suite_id:
            other_suites.add(stored["suite_id"])
        if stored["plugins"] is not None:
            now = cell_plugins(cell, registry, suite.metrics)
            for key, version in stored["plugins"].items():
                if key in now and now[key] != version:
                    other_plugins[key] = (version, now[key])
    reasons = []
    if other_suites:
        reasons.append(f"they ran in another resolved suite ({', '.join(sorted(other_suites))}; this one is {suite.suite_id})")
    if other_plugins:
        changed = "; ".join(f"{key}: {old} then, {new} now" for key, (old, new) in sorted(other_plugins.items()))
        reasons.append(f"they used other plugin versions ({changed})")
    return " and ".join(reasons)


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
        "architecture_name": cell.architecture.name,
        "width": str(cell.architecture.width),
        "depth": str(cell.architecture.depth),
        "optimizer": cell.entry.label,
        "optimizer_name": cell.entry.name,
        "role": cell.role,
        "prior": cell.entry.settings.prior,
        "hyperparameters": _json({**cell.entry.settings.to_json(), **cell.entry.hyperparameters}),
        "models_requested": cell.entry.models,
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
    for index, task in enumerate(suite.tasks):
        spec = registry.dataset(task.dataset)
        splits = load_splits(spec, data)
        files[spec.name] = dataset_files(spec, data)
        counts = torch.bincount(splits.train_labels, minlength=spec.num_classes).tolist()
        largest = max(task.n_train)
        needed = spec.holdout_per_class + largest // 2
        for pair in task.classes:
            for label in pair:
                have = counts[label] if label < len(counts) else 0
                if have < needed:
                    raise BenchsuiteError(
                        f"{suite.path}: tasks[{index}]: {spec.name} class {label} has {have} training images "
                        f"but N={largest} needs {needed} ({spec.holdout_per_class} held out + {largest // 2} "
                        "for training); lower n_train"
                    )
    return files


MISMATCH_POLICIES = ("stop", "restart", "resume")


def _check_resumable(path: Path, cells: list[Cell], suite: Suite, registry: Registry, on_mismatch: str) -> None:
    if on_mismatch not in MISMATCH_POLICIES:
        raise ValueError(f"on_mismatch must be one of {MISMATCH_POLICIES}, got {on_mismatch!r}")
    if not path.exists() or on_mismatch == "resume":
        return
    with Store(path, read_only=True) as store:
        origins = store.cell_origins()
    problem = resume_problem(origins, cells, suite, registry)
    if not problem:
        return
    if on_mismatch == "stop":
        done = sum(cell.cell_id in origins for cell in cells)
        raise BenchsuiteError(
            f"{path}: {done} of this suite's cells are finished there, but {problem}; resuming "
            "would mix them. Run into a new folder, or pass --restart (the old database is kept "
            "beside it) or --resume-anyway"
        )
    stamp = time.strftime("%Y%m%dT%H%M%S")
    path.rename(path.with_name(f"results.superseded-{stamp}.sqlite"))


def run_suite(
    suite: Suite,
    out: str | Path,
    registry: Registry | None = None,
    progress: Progress | None = None,
    device: str | None = None,
    command: str = "",
    group_cells: bool = True,
    executor: str = "local",
    on_mismatch: str = "stop",
) -> list[dict]:
    """Run every unfinished cell of `suite` into `out`; return the leaderboard rows.

    Writes only `out/results.sqlite`: rendering the rows (files, terminal) is the caller's choice
    (benchsuite.reporting.files.write_leaderboard; the CLI writes every format).

    group_cells: train gradient cells that differ only in class pair and training set together
    (identical results; False runs cell by cell, as the benchmarks' reference does).
    executor: the plugin that executes the units of cells (`local`: one after another, here);
    whichever runs them, this process alone writes the store, as each cell finishes.
    on_mismatch: what to do when `out` holds finished cells of another resolved suite or of other
    plugin versions: "stop" (a one-line error, nothing written), "restart" (the old database is
    kept beside as results.superseded-<time>.sqlite, the run starts afresh) or "resume" (keep
    them, knowingly)."""
    registry = registry or default_registry()
    progress = progress or Progress()
    out = Path(out)
    torch_device = resolve_device(device or suite.device)
    data = DataOptions(
        root=Path(suite.data.root).expanduser() if suite.data.root else None,
        download=suite.data.download,
    )
    cells = expand(suite)
    data_files = preflight(suite, registry, data)
    environment = {**capture_environment(torch_device, registry), "data_files": data_files}
    executor = registry.executor(executor)
    _check_resumable(out / "results.sqlite", cells, suite, registry, on_mismatch)
    with Store(out / "results.sqlite") as store:
        store.check_network_counts()
        finished = store.finished_cell_ids()
        todo = [c for c in cells if c.cell_id not in finished]
        run_id = store.start_run(suite.suite_id, suite.resolved, environment, command)
        progress.start_run(len(cells), len(cells) - len(todo))
        positions = {cell.cell_id: index for index, cell in enumerate(todo)}
        tasks = TaskCache()

        def run_unit(unit: tuple[Cell, ...]) -> Iterator[CellOutcome]:
            """One unit here, in this process: its gradient cells trained in one stack, then
            each cell checked and evaluated, yielded as it finishes."""
            unit, tunings = tune_cells(unit, tasks, registry, data, torch_device)
            produced = {}
            if len(unit) > 1:
                progress.start_cell(unit[0], positions[unit[0].cell_id], unit[0].entry.models, "networks")
                produced = produce_populations(list(unit), tasks, registry, data, torch_device)
            for cell in unit:
                unit_name = "candidates" if cell.role == "baseline" else "networks"
                progress.start_cell(cell, positions[cell.cell_id], cell.entry.models, unit_name)
                outcome = run_cell(
                    cell, tasks, registry, data, torch_device, progress, suite.metrics,
                    produced.pop(cell.cell_id, None),
                )  # fmt: skip
                outcome.tuning = tunings.get(cell.cell_id)
                yield outcome

        plan = ExecutionPlan(units=work_units(todo, group_cells), run_unit=run_unit, device=str(torch_device))
        for outcome in executor.execute(plan):
            spec = registry.dataset(outcome.cell.dataset)
            record = cell_record(outcome, run_id, suite.suite_id, spec.class_names, torch_device)
            record["plugins"] = _json(cell_plugins(outcome.cell, registry, suite.metrics))
            store.add_cell(
                record, network_results(outcome), outcome.train_indices, outcome.population.estimates,
                tuning_record(outcome),
            )  # fmt: skip
            progress.finish_cell(outcome)
        store.finish_run(run_id)
        progress.finish_run()
        return leaderboard_from_store(store, suite.reference_baseline)
