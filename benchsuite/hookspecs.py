"""The plugin boundary: every hook a benchsuite plugin may implement.

Each hook returns a list of typed records (see benchsuite.records); the host flattens them,
rejects duplicate names and owns everything else (loops, devices, batching, seeds, storage).
A plugin module implements any subset:

    from benchsuite import hookimpl
    from benchsuite.records import Hyperparameter, OptimizerSpec

    @hookimpl
    def benchsuite_optimizers():
        return [OptimizerSpec(name="lion", factory=Lion, elementwise=True,
                              hyperparameters={"lr": Hyperparameter(float, 1e-4, low=0.0)})]

and is announced in its distribution's pyproject.toml:

    [project.entry-points.benchsuite]
    lion = "benchsuite_lion"
"""

from __future__ import annotations

import pluggy

from benchsuite.records import (
    ArchitectureSpec,
    DatasetSpec,
    ExecutorSpec,
    MetricSpec,
    OptimizerSpec,
    PriorSpec,
    ReporterSpec,
    SamplerSpec,
)

PROJECT = "benchsuite"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def benchsuite_datasets() -> list[DatasetSpec]:
    """Named image datasets: each a loader of the full train and test splits of all classes.

    The host draws class pairs, nested training sets and normalization from them.
    """


@hookspec
def benchsuite_architectures() -> list[ArchitectureSpec]:
    """Named architectures: each a factory of an ordinary nn.Module with two output logits,
    built from the input shape and width/depth knobs. The host stacks many copies."""


@hookspec
def benchsuite_priors() -> list[PriorSpec]:
    """Named weight priors (initializers), shared by random-interpolator samplers and by
    gradient optimizers' initialization."""


@hookspec
def benchsuite_optimizers() -> list[OptimizerSpec]:
    """Named gradient optimizers: a torch.optim factory, its declared hyperparameters (type,
    default, valid range), and whether its update is elementwise (then K stacked networks share
    one optimizer exactly), stack-aware (`stacked`: it keeps the networks of a stack apart
    itself) or owns its step (`uses_closure`). How the host calls it: OptimizerSpec's docstring
    and docs/optimizer-contract.md."""


@hookspec
def benchsuite_samplers() -> list[SamplerSpec]:
    """Named random-interpolator baselines (such as Guess & Check): each turns a sampling request
    into a Population of networks drawn from the prior that fit the training set."""


@hookspec
def benchsuite_metrics() -> list[MetricSpec]:
    """Named per-network metrics a suite may ask for (`metrics: [...]`): each computes one value
    per network of a population, vectorized over the stacked networks, for optimizers and
    random interpolators alike. Values are stored per network (table network_metrics)."""


@hookspec
def benchsuite_executors() -> list[ExecutorSpec]:
    """Named ways to execute the cells of a run (`benchsuite run --executor NAME`): each runs the
    plan's units (here, in worker processes, on a cluster) and yields every finished cell; the
    host alone writes the store. Built-in: `local` (one unit after another in this process),
    `processes` (local worker processes) and `ray` (a Ray cluster)."""


@hookspec
def benchsuite_reporters() -> list[ReporterSpec]:
    """Named output formats of a leaderboard (`benchsuite leaderboard OUT --format NAME` prints
    one and writes leaderboard.<suffix>): each renders the leaderboard rows as text. Built-in: md,
    csv, json, latex, html (published folders use only these)."""
