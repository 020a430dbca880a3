"""One cell in whichever process runs it: its population (trained or sampled), the host's checks
and evaluation, and what the store keeps of it as plain data (CellOutcome).

Why plain data: a cell's outcome crosses a process boundary (a worker process, a Ray task) to the
one process that writes the store, which needs its rows, not its networks' tensors. The time
budget (a suite's `max_seconds_per_cell`) is kept here (Budget): past the deadline CellTimedOut
stops the cell where it stands, and the cell is recorded as timed out.
"""

from __future__ import annotations

import contextlib
import ctypes
import queue
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from benchsuite.architectures.build import bias_for, build_module
from benchsuite.engine import stopping
from benchsuite.engine.evaluation import evaluate
from benchsuite.engine.threads import one_cpu_thread
from benchsuite.errors import BenchsuiteError
from benchsuite.plugins import Registry
from benchsuite.records import DataOptions, MetricInput, MetricSpec, Population, SamplingRequest
from benchsuite.resolved import Cell
from benchsuite.store import NetworkResult, TuningRecord
from benchsuite.tasks import TaskCache

Report = Callable[[tuple], None]
"""Where a running unit says what it is doing: ("start", cell_id) when a cell begins and
("update", cell_id, accepted, work) as it goes; the run's display shows them."""


def ignore(_event: tuple) -> None:
    """A Report that shows nothing."""


class Forwarder:
    """A Report for a worker process: keeps starts and at most one update per `interval`
    seconds, and hands them to `send` from a thread of its own.

    Why a thread: a cell's time budget may raise CellTimedOut in the running thread between any
    two bytecodes (Budget.enforced); if that thread were writing a message to the driver, the
    message would be cut in half. Here the running thread only puts the event in a queue, one C
    call that happens whole or not at all."""

    def __init__(self, send: Callable[[tuple], None], interval: float = 0.25):
        self.send, self.interval, self.last = send, interval, 0.0
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._forward, daemon=True, name="benchsuite-progress").start()

    def __call__(self, event: tuple) -> None:
        now = time.monotonic()
        if event[0] == "start" or now - self.last >= self.interval:
            self.last = now
            self.events.put(event)

    def close(self) -> None:
        """Send what is queued, then end the thread."""
        self.events.put(None)

    def _forward(self) -> None:
        while True:
            event = self.events.get()
            if event is None:
                return
            try:
                self.send(event)
            except Exception:  # noqa: BLE001 - the driver is gone or busy: progress is only a display
                return


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


@dataclass(frozen=True)
class CellOutcome:
    """A finished cell as the store keeps it: its networks' rows and the cell's facts, no tensors.

    `status` is one of benchsuite.protocol.CELL_STATUSES; a cell that is not "ok" holds no
    networks. `diverged`: networks a gradient optimizer trained whose parameters ended NaN or inf
    (None for samplers)."""

    cell: Cell
    networks: tuple[NetworkResult, ...]
    candidates_tried: int
    seconds: float
    device: str
    epochs: int | None = None
    exhausted: bool = False
    estimates: dict[str, float] = field(default_factory=dict)
    train_indices: tuple[int, ...] = ()
    n_test: int | None = None
    status: str = "ok"
    detail: str = ""
    diverged: int | None = None
    tuning: TuningRecord | None = None  # how a tuned cell's values were chosen (execution.tuned)

    @property
    def size(self) -> int:
        return len(self.networks)


@dataclass
class CellContext:
    """What running cells needs in one process: the plugins, the data, the device, the suite's
    metrics and time budget, and the tasks built so far."""

    registry: Registry
    data: DataOptions
    device: torch.device
    metrics: tuple[str, ...] = ()
    max_seconds: float | None = None
    tasks: TaskCache = field(default_factory=TaskCache)

    def task(self, cell: Cell):
        return self.tasks.get(
            self.registry.dataset(cell.dataset), self.data, cell.classes, cell.n_train,
            cell.training_set_seed, self.device, cell.training_draw, cell.class_pair_seed,
        )  # fmt: skip


class CellTimedOut(BaseException):
    """A cell's time budget ran out. A BaseException, like KeyboardInterrupt, so that no plugin's
    `except Exception` swallows it; `finally` blocks still run."""


class Budget:
    """The deadline of a cell, or of the cells of a unit trained together (each cell's budget
    times their number), and the work each cell had done when it last reported.

    Three ways to stop a cell at the deadline: its progress callback raises CellTimedOut (after
    every G&C chunk, every training round); inside `enforced()`, a timer raises it in the running
    thread itself (CPython's PyThreadState_SetAsyncExc: it lands between two Python bytecodes,
    without the engines knowing), and requests it at the next optimizer step of that thread and
    of the worker threads serving it (engine/stopping.py). The last is what stops a round whose
    networks train on workers while the thread waits for them (an asynchronous exception waits
    with it), and what still stops one when CPython drops the asynchronous exception (it does
    when it lands in a finalizer)."""

    def __init__(self, seconds: float | None, cells: int = 1):
        self.started = time.perf_counter()
        self.seconds = seconds
        self.deadline = None if seconds is None else self.started + seconds * cells
        self.work: dict[str, int] = {}

    @contextlib.contextmanager
    def enforced(self):
        """Raise CellTimedOut in this thread at the deadline if the block is still running."""
        if self.deadline is None:
            yield
            return
        thread, lock = threading.get_ident(), threading.Lock()
        state = {"active": True, "fired": False, "timer": None}

        def fire() -> None:
            with lock:
                if not state["active"]:
                    return
                stopping.request(thread, CellTimedOut)
                if _importing(thread):  # an import cut short stays broken in sys.modules: wait
                    arm(IMPORT_WAIT)
                    return
                state["fired"] = True
                _raise_in(thread, CellTimedOut)

        def arm(seconds: float) -> None:
            state["timer"] = timer = threading.Timer(seconds, fire)
            timer.daemon = True
            timer.start()

        arm(max(0.0, self.deadline - time.perf_counter()))
        try:
            yield
        finally:
            with lock:
                state["active"] = False
                if state["fired"]:
                    _raise_in(thread, None)  # not raised yet (the block just ended): withdraw it
                stopping.withdraw(thread)
                state["timer"].cancel()

    def callback(self, cell: Cell, report: Report, shown: bool = True) -> Callable[[int, int], None]:
        def progress(accepted: int, work: int) -> None:
            self.work[cell.cell_id] = int(work)
            if shown:
                report(("update", cell.cell_id, int(accepted), int(work)))
            if self.deadline is not None and time.perf_counter() > self.deadline:
                raise CellTimedOut

        return progress

    def timed_out(self, cell: Cell, task, device: torch.device, where: str = "") -> CellOutcome:
        """The record of a cell stopped by the deadline: no networks (what it found by then
        depends on the machine's speed), the work done, the time taken; `where` it stopped."""
        elapsed = time.perf_counter() - self.started
        return CellOutcome(
            cell=cell, networks=(), candidates_tried=self.work.get(cell.cell_id, 0), seconds=elapsed,
            device=str(device), epochs=cell.entry.settings.epochs if cell.role != "baseline" else None,
            train_indices=tuple(task.train_indices.tolist()), n_test=int(task.x_test.shape[0]),
            status="timed_out",
            detail=f"stopped after {elapsed:.1f} s{' ' + where if where else ''} (max_seconds_per_cell {self.seconds:g})",
        )  # fmt: skip


IMPORT_WAIT = 0.02  # seconds between looks at a thread that is importing a module


def _importing(thread: int) -> bool:
    """Whether `thread` is inside an import (a frame of importlib's bootstrap on its stack)."""
    frame = sys._current_frames().get(thread)
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _raise_in(thread: int, exception: type[BaseException] | None) -> None:
    """Raise `exception` in `thread` at its next bytecode (None: withdraw a pending one)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread), ctypes.py_object(exception) if exception else None)


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


def produce_populations(
    cells: list[Cell], context: CellContext, budget: Budget, report: Report
) -> dict[str, tuple[Population, nn.Module]]:
    """Populations of several gradient cells, trained together where their networks can share a
    stack (engine.training.train_populations: each population equals the one trained alone).
    The first cell's progress is shown; every cell's counts against the shared budget."""
    from benchsuite.engine.training import train_populations

    modules, requests = [], []
    for index, cell in enumerate(cells):
        task = context.task(cell)
        module = cell_module(cell, task, context.registry, context.device)
        modules.append(module)
        progress = budget.callback(cell, report, shown=index == 0)
        requests.append(training_request(cell, task, context.registry, module, context.device, progress))
    populations = train_populations(requests)
    return {
        cell.cell_id: (population, module)
        for cell, population, module in zip(cells, populations, modules)
    }


def produce_population(
    cell: Cell, task, context: CellContext, progress: Callable | None
) -> tuple[Population, nn.Module]:
    """Run one cell's optimizer or sampler: its interpolating networks and the module they fill."""
    registry, device = context.registry, context.device
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
    cell: Cell, context: CellContext, report: Report = ignore,
    produced: tuple[Population, nn.Module] | None = None, budget: Budget | None = None,
) -> CellOutcome:
    """One cell: its population (or `produced`, trained beforehand with others), checked and
    evaluated on the test set, within the suite's time budget (`budget`: one already started,
    by the cell's tuning)."""
    task = context.task(cell)
    budget = budget or Budget(context.max_seconds)
    started = time.perf_counter()
    try:
        if produced is not None:
            population, module = produced
            report(("update", cell.cell_id, population.size, population.candidates_tried))
        else:
            with budget.enforced():
                population, module = produce_population(cell, task, context, budget.callback(cell, report))
    except CellTimedOut:
        return budget.timed_out(cell, task, context.device)
    if population.seconds <= 0:
        population.seconds = time.perf_counter() - started
    diverged = population.diverged if cell.role != "baseline" else None
    if diverged and population.size == 0:  # nothing fits, and the loss blew up
        return CellOutcome(
            cell=cell, networks=(), candidates_tried=population.candidates_tried,
            seconds=float(population.seconds), device=str(context.device), epochs=population.epochs,
            train_indices=tuple(task.train_indices.tolist()), n_test=int(task.x_test.shape[0]),
            status="diverged", diverged=diverged,
            detail=f"{diverged} of {population.candidates_tried} networks trained diverged (a NaN or inf loss, or the optimizer's linear algebra failed on them); none fits",
        )  # fmt: skip
    module.eval()
    metrics = [context.registry.metric(name) for name in context.metrics]
    initial = initial_state(cell, population, module, context.registry, context.device) if metrics else None
    with one_cpu_thread(context.device):
        return _evaluate(cell, task, population, module, metrics, diverged, context.device, initial)


def initial_state(cell: Cell, population: Population, module: nn.Module, registry: Registry, device) -> dict | None:
    """A gradient cell's networks before training (MetricInput.initial_parameters), regenerated
    from the cell's seed and each network's attempt (Population.found_at), as training drew them;
    None for samplers, whose networks have no initialization."""
    if cell.role == "baseline" or not population.size:
        return None
    from benchsuite.engine.training import initial_parameters

    prior = registry.prior(cell.entry.settings.prior)
    return initial_parameters(module, prior, cell.seed, population.found_at.tolist(), device)[0]


def _metric(
    metric: MetricSpec, cell: Cell, task, population: Population, module: nn.Module, initial: dict | None = None
) -> torch.Tensor:
    """One metric of every network, checked: a plugin's wrong shape stops the cell with one line."""
    data = MetricInput(
        module=module, parameters=population.parameters, buffers=population.buffers,
        x_train=task.x_train, y_train=task.y_train, x_test=task.x_test, y_test=task.y_test,
        tie_rule=cell.tie_rule, role=cell.entry.role, initial_parameters=initial,
    )  # fmt: skip
    values = metric.compute(data)
    if not isinstance(values, torch.Tensor) or tuple(values.shape) != (population.size,):
        shape = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
        raise BenchsuiteError(f"metric {metric.name!r} returned {shape}; it must return one value per network, shape ({population.size},)")
    return values.detach().double().cpu()


def accuracies(cell: Cell, task, population: Population, module: nn.Module) -> tuple[torch.Tensor, ...]:
    """Train accuracy, train ties, test accuracy, test ties of every network (module in eval mode)."""
    if not population.size:
        empty, none = torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.long)
        return empty, none, empty, none
    state = (module, population.parameters, population.buffers)
    train_acc, train_ties = evaluate(*state, task.x_train, task.y_train, cell.tie_rule)
    test_acc, test_ties = evaluate(*state, task.x_test, task.y_test, cell.tie_rule)
    return train_acc, train_ties, test_acc, test_ties


def metric_values(
    cell: Cell, task, population: Population, module: nn.Module, metrics: list[MetricSpec], initial: dict | None = None
) -> dict[str, torch.Tensor]:
    """Every metric of every network, by metric name."""
    if not population.size:
        return {}
    return {metric.name: _metric(metric, cell, task, population, module, initial) for metric in metrics}


def _evaluate(
    cell: Cell, task, population: Population, module: nn.Module, metrics: list[MetricSpec],
    diverged: int | None, device: torch.device, initial: dict | None = None,
) -> CellOutcome:
    train_acc, train_ties, test_acc, test_ties = accuracies(cell, task, population, module)
    if bool((train_acc < 1).any()):
        # the host re-checks every network it stores: a plugin's claim of interpolation is not enough
        raise BenchsuiteError(
            f"{cell.entry.label} returned networks that do not fit the training set "
            f"(train accuracy {train_acc.min().item():.3f}); refusing to store them"
        )
    values = metric_values(cell, task, population, module, metrics, initial)
    chains = population.chains.tolist() if population.chains is not None else [None] * population.size
    networks = tuple(
        NetworkResult(
            found_at=int(found_at), train_acc=float(train), test_acc=float(test),
            metrics={name: float(v[k]) for name, v in values.items()},
            train_ties=int(train_tie), test_ties=int(test_tie), chain=chains[k],
        )
        for k, (found_at, train, test, train_tie, test_tie) in enumerate(zip(
            population.found_at.tolist(), train_acc.tolist(), test_acc.tolist(),
            train_ties.tolist(), test_ties.tolist(),
        ))
    )  # fmt: skip
    return CellOutcome(
        cell=cell, networks=networks, candidates_tried=int(population.candidates_tried),
        seconds=float(population.seconds), device=str(device), epochs=population.epochs,
        exhausted=bool(population.exhausted),
        estimates={name: float(value) for name, value in population.estimates.items()},
        train_indices=tuple(task.train_indices.tolist()), n_test=int(task.x_test.shape[0]),
        diverged=diverged,
    )  # fmt: skip
