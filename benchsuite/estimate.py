"""How long a suite will take on this machine, measured before it runs (`benchsuite estimate`).

A study on this CPU can be minutes or days, and its cost is not in the YAML: it is the rate of
the engine (network-steps or candidates per second, which depend on the machine, the device,
the architecture and the optimizer) times the work (steps; for G&C, candidates = models /
P(fit), which depends on the data). So every estimate here is measured: each distinct kind of
cell is run briefly through the same engine calls a run makes, and the full cell is
extrapolated from that.

- Gradient cells: a probe trains the cell's first round (`models` networks, or fewer) for a few
  epochs with train_networks and times it; the cell costs networks x epochs x steps per epoch
  at that rate, plus its tuning trials. Where the probe could afford every epoch, the share of
  its networks that interpolates says how many networks the cell trains (models / share, at
  most `max_networks`); elsewhere every network is assumed to interpolate (a lower bound). The
  share is that of the probe's N, the smallest. One probe serves every cell with the
  same optimizer entry, architecture, dataset and batch size (the N of a cell only changes the
  steps per epoch).
- Sampler cells: the sampler runs as in a run, stopped at its first progress report after
  `seconds` (_probe_sampler). If it finished, that is the cost. (subset-mcmc, which reports only
  after each repeat, instead runs one repeat of a few particles to the end, scaled by its
  particles x repeats: _scaled_subset_cost.) Otherwise the share of its `models` found so far
  extrapolates; for G&C with fewer than FEW_FITS fits seen, P(fit) comes from a short subset
  simulation instead (subset-mcmc, exact in the limit; where it cannot run, BatchNorm networks,
  the few fits extrapolate, or with none the estimate is a lower bound) and the cost is
  models / P(fit) candidates at the probe's rate. One probe per entry, architecture, task, N and
  training set: P(fit) depends on the data, and training sets of one pair and N differ by up to
  13x (Fashion-MNIST pullover vs bag at N = 32: -log2 P(fit) 16.0 to 19.7 bits over four sets).
  A lower bound found at one N serves the larger N of the same stream (the training sets are
  nested, so P(fit) only falls with N).
- Every cell adds `models` x the seconds per network of what follows finding a network (the
  check on the training set, the test set, the suite's metrics), timed once per architecture,
  role and task on networks drawn from the prior (EVALUATION_NETWORKS of them: a run tests
  more at once, so this errs high): with metrics this can outweigh training.
- Left out: G&C's reuse of decisions across nested N (it makes real runs cheaper), other
  processes on the machine (their load is read before the probes, and a busy machine is said:
  SuiteEstimate.busy).
"""

from __future__ import annotations

import heapq
import json
import math
import os
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

import torch

from benchsuite.engine.batches import round_orders, steps_per_epoch
from benchsuite.engine.threads import one_cpu_thread, usable_cpus
from benchsuite.execution.cells import (
    Budget,
    CellContext,
    CellTimedOut,
    accuracies,
    cell_module,
    initial_state,
    metric_values,
    produce_population,
    resolve_device,
)  # fmt: skip
from benchsuite.execution.units import stack_sharing, work_units
from benchsuite.plugins import Registry, default_registry
from benchsuite.records import DataOptions, SamplingRequest
from benchsuite.resolved import Cell, Suite, expand

SUBSET_SAMPLER = "subset-mcmc"  # estimates P(fit) where G&C sees no fit in its probe
SUBSET_PROBE = {"particles": 128, "repeats": 1, "moves": 8, "final_moves": 1}
SUBSET_SCALED_PARTICLES = 32  # a subset-mcmc cell's probe: one repeat of these, scaled
REJECTION_SAMPLERS = ("gnc",)  # samplers whose cost is models / P(fit) candidates
# Below this many fits a probe stopped by the clock reads P(fit) high: a count that happened to
# reach 1 or 2 is kept, one that stayed at 0 goes to the subset simulation, so the counts kept
# over-represent luck (docs/performance.md, "What a study costs")
FEW_FITS = 5


@dataclass(frozen=True)
class CellCost:
    """The estimated seconds of one cell, and how the figure came about."""

    cell: Cell
    seconds: float
    basis: str  # "measured", "extrapolated", "subset simulation", "scaled", "at least", "budget"
    note: str = ""
    evaluation: float = 0.0  # of `seconds`: checking, testing and measuring its networks

    @property
    def lower_bound(self) -> bool:
        return self.basis == "at least"


@dataclass(frozen=True)
class SuiteEstimate:
    """Every cell's cost, the seconds the probes themselves took, and how busy the machine was
    when they started (the 1-minute load average, where the system gives one, and the CPUs)."""

    costs: tuple[CellCost, ...]
    probe_seconds: float
    device: str
    shares_stacks: Callable[[Cell], bool] | None = None  # the run's grouping (units.stack_sharing)
    load: float | None = None
    cpus: int = 1

    @property
    def busy(self) -> str | None:
        """A line for probes that had no core to themselves: other work beside them makes every
        figure err high, by several times on a busy machine (docs/performance.md)."""
        if self.load is None or self.load <= self.cpus - 0.5:
            return None
        return (
            f"the machine was busy when the probes started (load {self.load:.1f} on {self.cpus} CPUs): they shared "
            "the CPUs with other work, so these figures err high, by several times on a busy machine; "
            "estimate on an idle one"
        )

    @property
    def seconds(self) -> float:
        return sum(c.seconds for c in self.costs)

    @property
    def lower_bound(self) -> bool:
        return any(c.lower_bound for c in self.costs)

    def wall_seconds(self, workers: int) -> float:
        """Seconds until `workers` workers finish every cell, handed out as a run hands them: the
        cells' work units (execution.units.work_units: a stack's cells or a sampler's nested N
        together, on one worker) in suite order, each to the worker free first. With one worker
        it is the total; more workers than cores make each cell slower, which this does not
        model."""
        free = [0.0] * workers
        seconds = {cost.cell.cell_id: cost.seconds for cost in self.costs}
        for unit in work_units([cost.cell for cost in self.costs], shares_stacks=self.shares_stacks):
            heapq.heappush(free, heapq.heappop(free) + sum(seconds[cell.cell_id] for cell in unit))
        return max(free)

    def groups(self) -> list[dict]:
        """One row per (method, architecture): cells, seconds (evaluation: the part spent testing
        the networks found), and the bases of the figures."""
        rows: dict[tuple[str, str], dict] = {}
        for cost in self.costs:
            key = (cost.cell.entry.label, cost.cell.architecture_label)
            row = rows.setdefault(key, {"method": key[0], "architecture": key[1], "role": cost.cell.role,
                                        "cells": 0, "seconds": 0.0, "evaluation": 0.0, "bases": set()})  # fmt: skip
            row["cells"] += 1
            row["seconds"] += cost.seconds
            row["evaluation"] += cost.evaluation
            row["bases"].add(cost.basis)
        return [{**row, "bases": sorted(row["bases"])} for row in rows.values()]


def estimate(
    suite: Suite, registry: Registry | None = None, device: str | None = None, seconds: float = 2.0,
    progress: Callable[[str, int, int], None] | None = None, finished: Collection[str] = (),
) -> SuiteEstimate:  # fmt: skip
    """estimate_suite on the suite's device (or `device`), its data read as a run reads them."""
    registry = registry or default_registry()
    data = DataOptions(
        root=Path(suite.data.root).expanduser() if suite.data.root else None,
        download=suite.data.download,
    )
    context = CellContext(registry, data, resolve_device(device or suite.device), suite.metrics)
    return estimate_suite(suite, context, seconds, progress, finished)


def estimate_suite(
    suite: Suite, context: CellContext, seconds: float = 2.0,
    progress: Callable[[str, int, int], None] | None = None, finished: Collection[str] = (),
) -> SuiteEstimate:  # fmt: skip
    """Measure and extrapolate every cell of `suite` on `context.device`; `seconds` per probe.
    progress(label, done, total) is called before each probe. `finished`: ids of cells a result
    folder already holds (a resumed run skips them), left out of the estimate."""
    cells = [cell for cell in expand(suite) if cell.cell_id not in finished]
    load = machine_load()
    probes: dict[tuple, list[Cell]] = {}
    for cell in cells:
        probes.setdefault(_probe_key(cell), []).append(cell)
    started = time.perf_counter()
    costs: dict[str, CellCost] = {}
    unfit: dict[tuple, CellCost] = {}  # a sampler stream whose probe saw no fit at a smaller N
    for index, (key, members) in enumerate(probes.items()):
        first = members[0]
        if progress is not None:
            data = f"N={first.n_train}" + (f" set {first.training_set_seed}" if first.role == "baseline" else "")
            progress(f"{first.entry.label} {first.architecture_label} {data}", index, len(probes))
        if first.role == "baseline":
            stream = key[:4] + key[5:]  # all but N
            if stream in unfit:  # nested training sets: P(fit) only falls with N, the bound holds
                found = unfit[stream]
                found = CellCost(first, found.seconds, found.basis, f"{found.note} at N={found.cell.n_train}")
            else:
                found = _sampler_cost(first, context, seconds)
                if found.lower_bound:
                    unfit[stream] = found
            costs.update({c.cell_id: CellCost(c, found.seconds, found.basis, found.note) for c in members})
        else:
            per_step, tuning_per_step, fit, note = _seconds_per_network_step(first, context, seconds)
            for cell in members:
                spent = training_seconds(cell, per_step, fit, tuning_per_step)
                costs[cell.cell_id] = CellCost(cell, spent, "extrapolated", note)
    evaluations: dict[tuple, float] = {}  # seconds per network of the test set and metrics
    for cell in cells:
        key = _evaluation_key(cell)
        if key not in evaluations:
            if progress is not None:
                progress(f"evaluation {cell.architecture_label}", len(probes), len(probes))
            evaluations[key] = _evaluation_seconds_per_network(cell, context)
    if progress is not None:
        progress("done", len(probes), len(probes))
    limit = suite.max_seconds_per_cell
    ordered = []
    for cell in cells:
        cost = costs[cell.cell_id]
        evaluated = cell.entry.models * evaluations[_evaluation_key(cell)]
        cost = CellCost(cell, cost.seconds + evaluated, cost.basis, cost.note, evaluated)
        if limit is not None and cost.seconds > limit:
            cost = CellCost(cell, float(limit), "budget", f"max_seconds_per_cell {limit:g} stops it", 0.0)
        ordered.append(cost)
    return SuiteEstimate(
        tuple(ordered), time.perf_counter() - started, str(context.device), stack_sharing(context.registry),
        load, usable_cpus(),
    )  # fmt: skip


def machine_load() -> float | None:
    """The 1-minute load average (runnable processes, this one idle), or None where the system
    has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _probe_key(cell: Cell) -> tuple:
    entry = cell.entry
    method = json.dumps(entry.to_json(), sort_keys=True, default=str)  # name, label, role, settings...
    architecture = json.dumps(cell.architecture.to_json(), sort_keys=True, default=str)
    if cell.role == "baseline":  # the stream (all but N, index 4) keeps its training set
        data = (cell.dataset, cell.classes, cell.n_train, cell.training_draw, cell.training_set_seed)
        return (method, architecture, *data)
    return (method, architecture, cell.dataset, entry.settings.batch_size_for(cell.n_train))


def _evaluation_key(cell: Cell) -> tuple:
    architecture = json.dumps(cell.architecture.to_json(), sort_keys=True, default=str)
    return (architecture, cell.role, cell.dataset, cell.classes, cell.training_draw)


EVALUATION_NETWORKS = 8  # networks evaluated per evaluation probe


def _evaluation_seconds_per_network(cell: Cell, context: CellContext) -> float:
    """What a run spends per network after finding it: the check on the training set, the test
    set and the suite's metrics (run_cell's calls, on networks drawn from the cell's prior)."""
    from benchsuite.engine.training import initial_parameters
    from benchsuite.records import Population

    task = context.task(cell)
    module = cell_module(cell, task, context.registry, context.device)
    count = max(1, min(EVALUATION_NETWORKS, cell.entry.models))
    prior = context.registry.prior(cell.entry.settings.prior)
    parameters, buffers = initial_parameters(module, prior, cell.seed, range(count), context.device)
    population = Population(
        parameters=parameters, buffers=buffers, found_at=torch.arange(count), candidates_tried=count, seconds=1.0
    )
    metrics = [context.registry.metric(name) for name in context.metrics]
    module.eval()
    started = time.perf_counter()  # as run_cell does it, without refusing networks that do not fit
    initial = initial_state(cell, population, module, context.registry, context.device) if metrics else None
    with one_cpu_thread(context.device):
        accuracies(cell, task, population, module)
        metric_values(cell, task, population, module, metrics, initial)
    return (time.perf_counter() - started) / count


# ---------------------------------------------------------------------------------------------
# gradient cells


def training_seconds(cell: Cell, per_step: float, fit: float = 1.0, tuning_per_step: float | None = None) -> float:
    """A gradient cell at `per_step` seconds per network-step: the networks it trains to find its
    `models` when a share `fit` of them interpolates (at most max_networks), and its tuning
    trials' networks at `tuning_per_step` (their small stacks cost more per network; default
    `per_step`), each trained for the cell's epochs x steps per epoch."""
    settings = cell.entry.settings
    steps = settings.epochs * steps_per_epoch(cell.n_train, settings.batch_size_for(cell.n_train))
    networks = min(settings.max_networks, math.ceil(cell.entry.models / fit)) if fit > 0 else settings.max_networks
    spent = networks * steps * per_step
    if cell.tuned:
        trials = cell.tuning.trials * cell.tuning.networks
        spent += trials * steps * (per_step if tuning_per_step is None else tuning_per_step)
    return spent


def _seconds_per_network_step(cell: Cell, context: CellContext, seconds: float) -> tuple[float, float, float, str]:
    """Train the cell's first round for a few epochs (after a small warm-up) and time it: (seconds
    per network-step, the same in a tuning trial's stack, the share that interpolates, a note).
    The share is measured where the probe afforded every epoch (at this cell's N, the smallest of
    the probe's); else it is 1."""
    settings = cell.entry.settings
    task = context.task(cell)
    batch = settings.batch_size_for(task.n_train)
    per_epoch = steps_per_epoch(task.n_train, batch)
    networks = max(1, min(cell.entry.models, settings.max_networks))
    warm, _ = _train_for(cell, context, task, min(networks, 4), 1)
    guess = warm / (min(networks, 4) * per_epoch)
    epochs = max(1, min(settings.epochs, math.ceil(seconds / max(guess * networks * per_epoch, 1e-9))))
    took, fit = _train_for(cell, context, task, networks, epochs)
    note = f"{networks} networks x {epochs} epochs timed"
    if epochs == settings.epochs:
        note += f"; {fit:.0%} interpolate at N={task.n_train}"
    else:
        fit = 1.0
        note += "; every network assumed to interpolate"
    per_step = took / (networks * epochs * per_epoch)
    tuning_per_step = per_step
    if cell.tuned and cell.tuning.networks != networks:
        trial, _ = _train_for(cell, context, task, cell.tuning.networks, epochs)
        tuning_per_step = trial / (cell.tuning.networks * epochs * per_epoch)
        note += f"; a trial's {cell.tuning.networks} networks timed too"
    return per_step, tuning_per_step, fit, note


def _train_for(cell: Cell, context: CellContext, task, networks: int, epochs: int) -> tuple[float, float]:
    """(seconds to train `networks` of the cell's first round for `epochs`, the share that fits)."""
    from benchsuite.engine.training import initial_parameters, optimizer_seeds, train_networks
    from benchsuite.schedules import from_record
    from benchsuite.stacked import accuracy

    registry, device = context.registry, context.device
    cell = _with_trial_values(cell, registry)
    entry, settings = cell.entry, cell.entry.settings
    module = cell_module(cell, task, registry, device)
    optimizer = registry.optimizer(entry.name)
    attempts = range(networks)
    parameters, buffers = initial_parameters(module, registry.prior(settings.prior), cell.seed, attempts, device)
    orders = round_orders(cell.seed, attempts, task.n_train, epochs, settings.batch_order)
    started = time.perf_counter()
    trained, trained_buffers = train_networks(
        module, task.x_train, task.y_train, optimizer, dict(entry.hyperparameters), parameters, buffers,
        orders, settings.batch_size_for(task.n_train), seeds=optimizer_seeds(optimizer, cell.seed, attempts),
        schedule=from_record(settings.schedule),
    )  # fmt: skip
    took = time.perf_counter() - started
    module.eval()
    with one_cpu_thread(device):
        fits = accuracy(module, trained, trained_buffers, task.x_train, task.y_train, cell.tie_rule) == 1.0
    return took, float(fits.double().mean())


def _with_trial_values(cell: Cell, registry: Registry) -> Cell:
    """A tuned cell with its first trial's values (any trial costs about the same)."""
    if not cell.tuned:
        return cell
    from benchsuite.tuning import trial_values

    optimizer = registry.optimizer(cell.entry.name)
    types = {name: optimizer.declared[name].type for name in cell.entry.tuned}
    return cell.with_values(trial_values(cell.tuning, cell.entry.tuned, types)[0])


# ---------------------------------------------------------------------------------------------
# sampler cells


def _sampler_cost(cell: Cell, context: CellContext, seconds: float) -> CellCost:
    task = context.task(cell)
    seen = {"accepted": 0, "work": 0}

    def report(event: tuple) -> None:
        if event[0] == "update":
            seen["accepted"], seen["work"] = int(event[2]), int(event[3])

    if cell.entry.name == SUBSET_SAMPLER:  # it reports only after each repeat: probe it scaled down
        scaled = _scaled_subset_cost(cell, task, context, seconds)
        if scaled is not None:
            return scaled
    population, took = _probe_sampler(cell, task, context, seconds, report)
    models = cell.entry.models
    if population is not None:
        if population.exhausted:
            return CellCost(cell, took, "measured", f"its budget ran out with {population.size} of {models}")
        return CellCost(cell, took, "measured")
    return cost_from_probe(cell, seen["accepted"], seen["work"], took, lambda: _neg_log2_p_fit(cell, task, context))


def cost_from_probe(
    cell: Cell, accepted: int, work: int, took: float, neg_log2_p_fit: Callable[[], float | None]
) -> CellCost:
    """A sampler cell's cost from a probe stopped after `took` seconds with `accepted` of its
    networks found in `work` candidates (or evaluations): G&C with fewer than FEW_FITS fits takes
    P(fit) from `neg_log2_p_fit` (a subset simulation; None where it cannot run), anything else
    extrapolates the fits, and no fit at all is a lower bound."""
    models = cell.entry.models
    rate = work / took if took > 0 else 0.0
    if cell.entry.name in REJECTION_SAMPLERS and work and accepted < FEW_FITS:
        bits = neg_log2_p_fit()
        if bits is not None:
            seen = f"; the probe's {accepted} of {models} in {took:.1f} s too few to extrapolate" if accepted else ""
            return _capped(cell, models * 2.0**bits / rate, rate, "subset simulation",
                           f"-log2 P(fit) ~ {bits:.1f}, {rate:,.0f} candidates/s{seen}")  # fmt: skip
    if accepted:
        found = f"{accepted} of {models} found in {took:.1f} s"
        return _capped(cell, took * models / accepted, rate, "extrapolated", found)
    if cell.entry.name in REJECTION_SAMPLERS and work:
        # no fit in `work` candidates: P(fit) < 3 / work (95%), so at least models x work / 3 of them
        return CellCost(cell, took * models / 3.0, "at least", f"no fit in {work:,} candidates")
    return CellCost(cell, took, "at least", f"not finished in {took:.1f} s")


PROBE_CAP = 30  # a sampler that never reports progress is stopped at this many times `seconds`


def _probe_sampler(cell: Cell, task, context: CellContext, seconds: float, report) -> tuple:
    """(the population, or None if stopped; the seconds it ran). It stops at its first progress
    report after `seconds` (so a large network's first chunk is always counted), or at
    PROBE_CAP x `seconds` (at least a minute) without one."""
    soft, hard = Budget(seconds), Budget(max(60.0, PROBE_CAP * seconds))
    started = time.perf_counter()
    try:
        with hard.enforced():
            population, _ = produce_population(cell, task, context, soft.callback(cell, report))
    except CellTimedOut:
        population = None
    return population, time.perf_counter() - started


def _scaled_subset_cost(cell: Cell, task, context: CellContext, seconds: float) -> CellCost | None:
    """subset-mcmc's cost from one repeat of at most SUBSET_SCALED_PARTICLES particles, run to
    the end and scaled by particles x repeats over that: its levels (one per halving of P(fit)),
    moves and evaluations per particle do not depend on the particle count in expectation, so its
    work is proportional to it. The probe's fixed costs per call make it err high, its smaller
    working set (in cache) low: measured against the width slice's N = 256 cells, the runs took
    1.0-1.1x the estimate (docs/performance.md). None where the probe does not finish within
    max(60 s, PROBE_CAP x `seconds`)."""
    options = cell.entry.hyperparameters  # resolved: every option, defaults included
    particles = min(int(options["particles"]), SUBSET_SCALED_PARTICLES)
    factor = int(options["particles"]) * int(options["repeats"]) / particles
    one_repeat = {**options, "particles": particles, "repeats": 1}
    request = _subset_request(cell, task, context, one_repeat, target=particles)
    started = time.perf_counter()
    try:
        with Budget(max(60.0, PROBE_CAP * seconds)).enforced():
            population = context.registry.sampler(SUBSET_SAMPLER).sample(request)
    except CellTimedOut:
        return None
    took = time.perf_counter() - started
    evaluations = population.candidates_tried * factor
    note = (
        f"1 repeat of {particles} particles: {took:.1f} s, "
        f"{population.candidates_tried:,} evaluations; x {factor:g}"
    )
    budget = cell.entry.settings.max_candidates
    if evaluations > budget:
        seconds = took * factor * budget / evaluations
        return CellCost(cell, seconds, "budget", f"{note}; max_candidates {budget:,} runs out first")
    return CellCost(cell, took * factor, "scaled", note)


def _capped(cell: Cell, seconds: float, rate: float, basis: str, note: str) -> CellCost:
    """At most the cell's candidate budget at the probe's rate (a rejection sampler stops there)."""
    budget = cell.entry.settings.max_candidates
    if rate > 0 and cell.entry.name in REJECTION_SAMPLERS and seconds > budget / rate:
        return CellCost(cell, budget / rate, "budget", f"{note}; max_candidates {budget:,} runs out first")
    return CellCost(cell, seconds, basis, note)


def _neg_log2_p_fit(cell: Cell, task, context: CellContext) -> float | None:
    """-log2 P(fit) of the cell's task from a short subset simulation, or None where it cannot run."""
    registry = context.registry
    if SUBSET_SAMPLER not in registry.names("sampler"):
        return None
    request = _subset_request(cell, task, context, dict(SUBSET_PROBE), target=1)
    try:
        population = registry.sampler(SUBSET_SAMPLER).sample(request)
    except (ValueError, NotImplementedError):  # e.g. BatchNorm networks
        return None
    bits = population.estimates.get("neg_log2_p_fit")
    return float(bits) if bits is not None and math.isfinite(bits) else None


def _subset_request(cell: Cell, task, context: CellContext, options: dict, target: int) -> SamplingRequest:
    """subset-mcmc on the cell's network, training set, prior and tie rule, with `options`, for
    `target` networks and no candidate budget."""
    registry = context.registry
    return SamplingRequest(
        module=cell_module(cell, task, registry, context.device), x_train=task.x_train,
        y_train=task.y_train, prior=registry.prior(cell.entry.settings.prior), target=target,
        max_candidates=10**12, seed=cell.seed, device=context.device, options=options,
        tie_rule=cell.tie_rule,
    )  # fmt: skip
