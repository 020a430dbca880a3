"""The tuning protocol (docs/tuning.md): a gradient cell's tuned hyperparameters chosen on a
validation split of its own held-out images, over a fixed budget of trials, before its networks
are trained with the chosen values.

Why per cell: a cell's results then depend on the cell alone (as its seed does), so adding a
training set, a pair or an optimizer to a suite never changes another cell's choice, and a
resumed run repeats every choice. Why the same trial values for every cell and entry: the trial
points are one Latin hypercube in [0, 1)^d drawn from the tuning seed and mapped into each
optimizer's declared search space, so every optimizer gets the same protocol and the same luck,
and the cells of one stack mostly choose among the same values (and keep training together).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from benchsuite.resolved import Cell, Tuning, derive_seed

SIGNIFICANT_DIGITS = 4  # trial values are rounded, so stored choices read as 0.003162, not 0.0031622776


# ---------------------------------------------------------------------------------------------
# The trial values


def unit_points(trials: int, dimensions: int, seed: int) -> list[tuple[float, ...]]:
    """A Latin hypercube: `trials` points in [0, 1)^dimensions, one in each of the `trials`
    equal slices of every axis, from Python's Mersenne Twister (the same on every platform)."""
    generator = random.Random(derive_seed(seed, "tuning points", trials, dimensions))
    axes = []
    for _ in range(dimensions):
        slices = list(range(trials))
        generator.shuffle(slices)
        axes.append([(s + generator.random()) / trials for s in slices])
    return [tuple(axis[t] for axis in axes) for t in range(trials)]


def scaled(u: float, search: Mapping[str, Any], kind: type) -> float | int:
    """The point u of [0, 1) in a search space {"low", "high", "scale"}, rounded for reading."""
    low, high = float(search["low"]), float(search["high"])
    if search["scale"] == "log":
        value = math.exp(math.log(low) + u * (math.log(high) - math.log(low)))
    else:
        value = low + u * (high - low)
    if kind is int:
        return int(min(max(round(value), math.ceil(low)), math.floor(high)))
    return min(max(float(f"{value:.{SIGNIFICANT_DIGITS}g}"), low), high)


def trial_values(tuning: Tuning, tuned: Mapping[str, Mapping[str, Any]], types: Mapping[str, type]) -> list[dict[str, Any]]:
    """The values each trial tries: the suite's unit points in each tuned search space, the
    dimensions in the entry's order of `tuned` (the learning rate first when listed first)."""
    names = list(tuned)
    points = unit_points(tuning.trials, len(names), tuning.seed)
    return [{name: scaled(u, tuned[name], types.get(name, float)) for name, u in zip(names, point)} for point in points]


# ---------------------------------------------------------------------------------------------
# The criterion


@dataclass(frozen=True)
class Trial:
    """One trial: its values, how many of its networks fit the training set, their mean
    validation accuracy (None when none fit) and its time."""

    index: int
    values: dict[str, Any]
    networks: int
    fitted: int
    validation_accuracy: float | None
    seconds: float

    @property
    def fit_share(self) -> float:
        return self.fitted / self.networks if self.networks else 0.0


def choose(trials: list[Trial], min_fit: float) -> int:
    """The chosen trial's index: among the eligible trials (at least one network and at least
    `min_fit` of them fit the training set), the highest mean validation accuracy of the networks
    that fit; when none is eligible, the most networks fitted, then the accuracy. Ties go to the
    earlier trial. Interpolation comes first because the protocol keeps only networks that fit:
    a value that rarely interpolates would spend the cell's budget."""
    eligible = [t for t in trials if t.fitted >= 1 and t.fit_share >= min_fit]

    def accuracy(trial: Trial) -> float:
        return -1.0 if trial.validation_accuracy is None else trial.validation_accuracy

    if eligible:
        best = max(eligible, key=lambda t: (accuracy(t), -t.index))
    else:
        best = max(trials, key=lambda t: (t.fitted, accuracy(t), -t.index))
    return best.index


@dataclass(frozen=True)
class TuningResult:
    """A cell's tuning: every trial, the chosen one, and the validation images (training-split
    indices) the trials were scored on."""

    trials: tuple[Trial, ...]
    chosen: int
    validation_indices: tuple[int, ...]

    @property
    def values(self) -> dict[str, Any]:
        return dict(self.trials[self.chosen].values)


# ---------------------------------------------------------------------------------------------
# Running the trials of a cell


def tune_cell(cell: Cell, task, validation, module, optimizer, prior, device) -> TuningResult:
    """Every trial of `cell` (a tuned gradient cell): `tuning.networks` networks, the same
    initializations and batch orders in every trial (only the values differ), trained on the
    cell's training set as its population will be, then scored on `validation`
    (tasks.ValidationSplit). Deterministic: the networks come from a seed derived from the cell's."""
    tuning = cell.tuning
    if tuning is None or not cell.entry.tuned:
        raise ValueError(f"{cell.entry.label}: nothing to tune")
    types = {name: optimizer.declared[name].type for name in cell.entry.tuned}
    seed = derive_seed(cell.seed, "tuning trials")
    trials = []
    for index, values in enumerate(trial_values(tuning, cell.entry.tuned, types)):
        started = time.perf_counter()
        fits, scores = _trial(cell, task, validation, module, optimizer, prior, values, seed, device)
        fitted = int(fits.sum())
        score = float(scores[fits].mean()) if fitted else None
        trials.append(Trial(index, values, len(fits), fitted, score, time.perf_counter() - started))
    chosen = choose(trials, tuning.min_fit)
    return TuningResult(tuple(trials), chosen, tuple(int(i) for i in validation.indices.tolist()))


def _trial(cell: Cell, task, validation, module, optimizer, prior, values, seed, device):
    """(fits the training set, validation accuracy) of each of the trial's networks."""
    from benchsuite.engine.batches import round_orders
    from benchsuite.engine.threads import one_cpu_thread
    from benchsuite.engine.training import initial_parameters, optimizer_seeds, train_networks
    from benchsuite.schedules import from_record
    from benchsuite.stacked import accuracy, evaluate

    settings = cell.entry.settings
    attempts = range(cell.tuning.networks)
    parameters, buffers = initial_parameters(module, prior, seed, attempts, device)
    orders = round_orders(seed, attempts, task.n_train, settings.epochs, settings.batch_order)
    trained, trained_buffers = train_networks(
        module, task.x_train, task.y_train, optimizer, {**cell.entry.hyperparameters, **values},
        parameters, buffers, orders, settings.batch_size_for(task.n_train),
        seeds=optimizer_seeds(optimizer, seed, attempts), schedule=from_record(settings.schedule),
    )  # fmt: skip
    was_training = module.training
    module.eval()
    try:
        with one_cpu_thread(device):
            fits = accuracy(module, trained, trained_buffers, task.x_train, task.y_train, cell.tie_rule) == 1.0
            scores, _ = evaluate(module, trained, trained_buffers, validation.x, validation.y, cell.tie_rule)
    finally:
        module.train(was_training)
    return fits.cpu(), scores.cpu()
