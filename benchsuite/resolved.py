"""The resolved suite as frozen, typed records, and its cells.

Validation (suite.py) builds these once, every default filled in; the rest of the host reads
named fields (`cell.entry.settings.batch_size`) instead of nested dicts. Each record's `to_json`
is its part of the canonical JSON that the suite id and the cell ids hash: that JSON is a
contract (published folders name the ids, a run resumes by cell id), so it must not change by a
byte (tests/test_suite_ids.py). No torch here: `publish` and `compare` import this module.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any

from benchsuite.protocol import BIAS_AUTO, DEFAULT_TIE_RULE, DEFAULT_TRAINING_DRAW, FULL_BATCH

Width = int | float | str  # a multiplier or a form such as "1/6" (architectures/widths.py)
Depth = int | str | None  # a layer count or a variant name such as "2c-1f"; None: the plugin's


# the key of a cell's recorded `plugins` that names the engine's arithmetic ("revision 2"):
# benchsuite.engine.NUMERICS_REVISION, or the revision before where UNCHANGED_BY says so, set by
# the runner (engine_revision)
ENGINE_KEY = "engine numerics"

# Engine revisions that left the bits of some built-in architectures as they were: cells of those
# record the revision before, so a folder of only such cells resumes across the change instead of
# stopping. An architecture of a plugin records the latest (it may build on the changed path).
UNCHANGED_BY = {12: frozenset({"mlp", "lenet"})}


def engine_revision(revision: int, builtin_architecture: str | None = None) -> int:
    """The revision a cell of this built-in architecture (None: a plugin's) records when the
    engine is at `revision`: the last one that changed that architecture's bits."""
    while builtin_architecture in UNCHANGED_BY.get(revision, ()):
        revision -= 1
    return revision


def cell_engine(
    environment_engine: str, architecture: str, recorded_plugins: Mapping[str, Any]
) -> str:
    """engine_revision for a cell, from a run environment's "revision N" and the cell's own
    record (whose "architecture NAME" says whether the architecture is built in)."""
    number = environment_engine.removeprefix("revision ")
    if not number.isdigit():
        return environment_engine
    provider = str(recorded_plugins.get(f"architecture {architecture}", ""))
    builtin = provider.startswith("benchsuite ")
    return f"revision {engine_revision(int(number), architecture if builtin else None)}"


def content_hash(value: Any, length: int = 16) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:length]


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from any JSON-able parts: adding a cell never changes another cell's seed."""
    return int(content_hash(list(parts), 16), 16) >> 1


# ---------------------------------------------------------------------------------------------
# the parts of a suite


@dataclass(frozen=True)
class DataSource:
    """Where datasets are read from; `download` permits a network fetch."""

    root: str | None = None
    download: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"root": self.root, "download": self.download}


@dataclass(frozen=True)
class Task:
    """One dataset's class pairs x training-set sizes x training sets."""

    dataset: str
    classes: tuple[tuple[int, int], ...]
    class_pair_seeds: tuple[int, ...] | None  # when given, they drew `classes` (one per pair)
    n_train: tuple[int, ...]
    training_set_seeds: tuple[int, ...]
    training_draw: str = DEFAULT_TRAINING_DRAW  # benchsuite.protocol.TRAINING_DRAWS

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "classes": [list(pair) for pair in self.classes],
            "class_pair_seeds": None if self.class_pair_seeds is None else list(self.class_pair_seeds),
            "n_train": list(self.n_train),
            "training_set_seeds": list(self.training_set_seeds),
            "training_draw": self.training_draw,
        }


@dataclass(frozen=True)
class Architecture:
    """One architecture variant, a cell's: `bias` is true, false or BIAS_AUTO (see bias_for)."""

    name: str
    width: Width
    depth: Depth
    bias: bool | str = BIAS_AUTO

    @property
    def label(self) -> str:
        parts = [f"width={self.width}"]
        if self.depth is not None:
            parts.append(f"depth={self.depth}")
        if self.bias != BIAS_AUTO:
            parts.append("bias" if self.bias else "no-bias")
        return f"{self.name}[{','.join(parts)}]"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "width": self.width, "depth": self.depth, "bias": self.bias}


@dataclass(frozen=True)
class ArchitectureGrid:
    """A suite's architecture entry: every width with every depth."""

    name: str
    widths: tuple[Width, ...]
    depths: tuple[Depth, ...]
    bias: bool | str = BIAS_AUTO

    def variants(self) -> Iterator[Architecture]:
        for width in self.widths:
            for depth in self.depths:
                yield Architecture(self.name, width, depth, self.bias)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "widths": list(self.widths), "depths": list(self.depths), "bias": self.bias}


@dataclass(frozen=True)
class OptimizerSettings:
    """The host's training loop for a gradient optimizer (protocol.md, "The gradient baseline")."""

    prior: str
    batch_size: int | str  # an integer or FULL_BATCH
    epochs: int
    batch_order: str  # benchsuite.protocol.BATCH_ORDERS
    max_networks: int  # the budget: networks trained at most
    # the learning-rate schedule as resolved (benchsuite.schedules); None: constant. Written into
    # the resolved JSON only when set, so suites without one keep their ids.
    schedule: Mapping[str, Any] | None = None

    @property
    def budget(self) -> int:
        return self.max_networks

    def batch_size_for(self, n_train: int) -> int:
        return n_train if self.batch_size == FULL_BATCH else int(self.batch_size)

    def to_json(self) -> dict[str, Any]:
        scheduled = {} if self.schedule is None else {"schedule": dict(self.schedule)}
        return {
            "prior": self.prior,
            "batch_size": self.batch_size,
            "epochs": self.epochs,
            "batch_order": self.batch_order,
            **scheduled,
            "max_networks": self.max_networks,
        }


@dataclass(frozen=True)
class SamplerSettings:
    """The host's side of a random interpolator: its prior and its budget."""

    prior: str
    max_candidates: int  # the budget: candidate networks drawn at most

    @property
    def budget(self) -> int:
        return self.max_candidates

    def to_json(self) -> dict[str, Any]:
        return {"prior": self.prior, "max_candidates": self.max_candidates}


BUDGET_KEYS = ("max_networks", "max_candidates")
TUNING_CRITERIA = ("validation_accuracy",)


@dataclass(frozen=True)
class Tuning:
    """A suite's tuning protocol (docs/tuning.md), the same for every tuned optimizer entry: per
    cell, `trials` values drawn from each tuned hyperparameter's declared search space (a Latin
    hypercube from `seed`, identical unit points for every entry), each tried on `networks`
    networks trained on the cell's training set and scored on a validation split of the cell's
    held-out images (`validation_per_class` per class; None: all of them); the best by `criterion`
    among trials where at least `min_fit` of the networks interpolate is the cell's value."""

    trials: int
    hyperparameters: tuple[str, ...]  # tuned by default in every gradient-optimizer entry
    networks: int
    validation_per_class: int | None
    seed: int
    min_fit: float
    criterion: str = "validation_accuracy"

    def to_json(self) -> dict[str, Any]:
        return {
            "trials": self.trials,
            "hyperparameters": list(self.hyperparameters),
            "networks": self.networks,
            "validation_per_class": self.validation_per_class,
            "seed": self.seed,
            "min_fit": self.min_fit,
            "criterion": self.criterion,
        }


@dataclass(frozen=True)
class Entry:
    """One optimizer or baseline entry, a grid already expanded: the method and its settings.

    `hyperparameters` are the plugin's (read-only); `performance_options` name those among them
    that change speed, never results, and so stay out of the cell id and seed. `tuned` maps the
    hyperparameters the suite's tuning chooses per cell to their search spaces ({"low", "high",
    "scale"}); their values here are placeholders (the plugin's defaults) until a cell's tuning
    replaces them (Cell.with_values), and they are written into the JSON as `tuned`, not as
    values. Empty (the default): the JSON is exactly what it was before tuning existed."""

    name: str
    label: str
    role: str  # "optimizer" or "baseline"
    performance_options: tuple[str, ...]
    models: int
    settings: OptimizerSettings | SamplerSettings
    hyperparameters: Mapping[str, Any]
    tuned: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hyperparameters", MappingProxyType(dict(self.hyperparameters)))
        object.__setattr__(self, "tuned", MappingProxyType({k: dict(v) for k, v in self.tuned.items()}))

    def fixed_hyperparameters(self) -> dict[str, Any]:
        """The hyperparameters the suite fixes (all but the tuned ones)."""
        return {k: v for k, v in self.hyperparameters.items() if k not in self.tuned}

    def __reduce__(self):
        """Pickled with a plain dict (a mappingproxy does not pickle): cells travel to workers."""
        return (Entry, (
            self.name, self.label, self.role, self.performance_options, self.models, self.settings,
            dict(self.hyperparameters), {k: dict(v) for k, v in self.tuned.items()},
        ))  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        tuned = {"tuned": {k: dict(v) for k, v in self.tuned.items()}} if self.tuned else {}
        return {
            "name": self.name,
            "label": self.label,
            "role": self.role,
            "performance_options": list(self.performance_options),
            "models": self.models,
            "settings": self.settings.to_json(),
            "hyperparameters": self.fixed_hyperparameters(),
            **tuned,
        }


# ---------------------------------------------------------------------------------------------
# the resolved suite


@dataclass(frozen=True)
class Suite:
    """A validated suite with every default filled in; `resolved` is its JSON record."""

    path: str
    name: str
    description: str
    seed: int
    device: str
    tie_rule: str
    models_per_cell: int
    data: DataSource
    tasks: tuple[Task, ...]
    architectures: tuple[ArchitectureGrid, ...]
    optimizers: tuple[Entry, ...]
    baselines: tuple[Entry, ...]
    reference_baseline: str | None  # the leaderboard's baseline label
    metrics: tuple[str, ...]
    max_seconds_per_cell: float | None = None  # a cell past it is stopped and recorded timed_out
    tuning: Tuning | None = None  # written into the JSON only when set (suite ids stay)

    @property
    def entries(self) -> tuple[Entry, ...]:
        return self.optimizers + self.baselines

    @property
    def resolved(self) -> dict[str, Any]:
        """The full record of what runs, as stored with every run (a fresh copy each time)."""
        return {
            "name": self.name,
            "description": self.description,
            "seed": self.seed,
            "device": self.device,
            "tie_rule": self.tie_rule,
            "models_per_cell": self.models_per_cell,
            "data": self.data.to_json(),
            "tasks": [task.to_json() for task in self.tasks],
            "architectures": [arch.to_json() for arch in self.architectures],
            "optimizers": [entry.to_json() for entry in self.optimizers],
            "baselines": [entry.to_json() for entry in self.baselines],
            "leaderboard": {"baseline": self.reference_baseline},
            "metrics": list(self.metrics),
            # only when set: a suite without it keeps the resolved JSON, and so the id, it had
            **({"max_seconds_per_cell": self.max_seconds_per_cell} if self.max_seconds_per_cell is not None else {}),
            **({} if self.tuning is None else {"tuning": self.tuning.to_json()}),
        }

    @property
    def suite_id(self) -> str:
        return content_hash(self.resolved)

    def as_document(self) -> dict[str, Any]:
        """A suite file that validates back to this very suite (same id): what `publish` writes,
        so a published leaderboard can be rerun as it is."""
        return runnable_document(self.resolved)


def suite_from_record(record: Mapping[str, Any], path: str = "") -> Suite:
    """The Suite a stored resolved record (`Suite.resolved`, as every run stores it) describes, so
    its cells can be expanded without the plugins that validated it. The inverse of `resolved`;
    a record it cannot rebuild exactly (another version's shape) raises KeyError or TypeError,
    and callers compare `suite_id` with the id the record was stored under."""

    def entry(e: Mapping[str, Any]) -> Entry:
        s = e["settings"]
        settings: OptimizerSettings | SamplerSettings
        if e["role"] == "baseline":
            settings = SamplerSettings(s["prior"], s["max_candidates"])
        else:
            settings = OptimizerSettings(
                s["prior"], s["batch_size"], s["epochs"], s["batch_order"], s["max_networks"], s.get("schedule")
            )
        return Entry(
            e["name"], e["label"], e["role"], tuple(e["performance_options"]), e["models"], settings,
            e["hyperparameters"], e.get("tuned", {}),
        )  # fmt: skip

    def task(t: Mapping[str, Any]) -> Task:
        seeds = t["class_pair_seeds"]
        return Task(
            t["dataset"], tuple((a, b) for a, b in t["classes"]), None if seeds is None else tuple(seeds),
            tuple(t["n_train"]), tuple(t["training_set_seeds"]), t["training_draw"],
        )  # fmt: skip

    tuning = record.get("tuning")
    return Suite(
        path=path,
        name=record["name"],
        description=record["description"],
        seed=record["seed"],
        device=record["device"],
        tie_rule=record["tie_rule"],
        models_per_cell=record["models_per_cell"],
        data=DataSource(record["data"]["root"], record["data"]["download"]),
        tasks=tuple(task(t) for t in record["tasks"]),
        architectures=tuple(
            ArchitectureGrid(a["name"], tuple(a["widths"]), tuple(a["depths"]), a["bias"]) for a in record["architectures"]
        ),
        optimizers=tuple(entry(e) for e in record["optimizers"]),
        baselines=tuple(entry(e) for e in record["baselines"]),
        reference_baseline=record["leaderboard"]["baseline"],
        metrics=tuple(record["metrics"]),
        max_seconds_per_cell=record.get("max_seconds_per_cell"),
        tuning=None if tuning is None else Tuning(
            tuning["trials"], tuple(tuning["hyperparameters"]), tuning["networks"], tuning["validation_per_class"],
            tuning["seed"], tuning["min_fit"], tuning["criterion"],
        ),
    )  # fmt: skip


def runnable_document(resolved: dict[str, Any]) -> dict[str, Any]:
    """The input form of a resolved suite (a stored record too): entries flattened, grids already
    expanded."""

    tuning = "tuning" in resolved  # then every optimizer entry says what it tunes, even nothing

    def entry(e: dict[str, Any]) -> dict[str, Any]:
        tuned = {"tune": list(e.get("tuned", {}))} if tuning and e["role"] == "optimizer" else {}
        return {"name": e["name"], "label": e["label"], "models": e["models"], **e["settings"], **e["hyperparameters"], **tuned}

    document = {k: v for k, v in resolved.items() if k not in ("optimizers", "baselines")}
    document["optimizers"] = [entry(e) for e in resolved["optimizers"]]
    document["baselines"] = [entry(e) for e in resolved["baselines"]]
    return document


# ---------------------------------------------------------------------------------------------
# cells


@dataclass(frozen=True)
class Cell:
    """One (task, architecture, optimizer entry): delivers `entry.models` interpolating networks."""

    dataset: str
    classes: tuple[int, int]
    n_train: int
    training_set_seed: int
    architecture: Architecture
    entry: Entry
    suite_seed: int
    training_draw: str = DEFAULT_TRAINING_DRAW  # benchsuite.protocol.TRAINING_DRAWS
    class_pair_seed: int | None = None  # seeds the reference draw when the pair came from one
    tie_rule: str = DEFAULT_TIE_RULE
    tuning: Tuning | None = None  # the suite's, on cells whose entry tunes something

    @property
    def tuned(self) -> bool:
        return self.tuning is not None and bool(self.entry.tuned)

    def with_values(self, values: Mapping[str, Any]) -> Cell:
        """This cell with its tuned hyperparameters set to `values` (its tuning's choice): the same
        identity, id and seed, since a tuned cell's identity names how its values are chosen, not
        the values."""
        unknown = set(values) - set(self.entry.tuned)
        if unknown:
            raise ValueError(f"{sorted(unknown)} are not tuned in {self.entry.label}")
        entry = dataclasses.replace(self.entry, hyperparameters={**self.entry.hyperparameters, **values})
        return dataclasses.replace(self, entry=entry)

    @cached_property
    def identity(self) -> dict[str, Any]:
        """What the cell id hashes: everything that decides the cell's results, nothing else
        (a performance option or the suite's name does not). A tuned cell's identity holds the
        tuning protocol and search spaces instead of the tuned values (docs/tuning.md)."""
        entry = self.entry
        tuned = self.tuned
        tuning = {"tuning": {**self.tuning.to_json(), "search": {k: dict(v) for k, v in entry.tuned.items()}}} if tuned else {}
        return {
            "dataset": self.dataset,
            "classes": list(self.classes),
            "n_train": self.n_train,
            "training_set_seed": self.training_set_seed,
            "training_draw": {"draw": self.training_draw, "class_pair_seed": self.class_pair_seed},
            "tie_rule": self.tie_rule,
            "architecture": self.architecture.to_json(),
            "method": {
                "name": entry.name,
                "label": entry.label,
                "role": entry.role,
                "hyperparameters": {
                    k: v for k, v in entry.hyperparameters.items()
                    if k not in entry.performance_options and not (tuned and k in entry.tuned)
                },
            },
            "settings": {k: v for k, v in entry.settings.to_json().items() if k not in BUDGET_KEYS},
            "models": entry.models,
            "budget": entry.settings.budget,
            "seed": self.suite_seed,
            **tuning,
        }

    @cached_property
    def cell_id(self) -> str:
        return content_hash(self.identity, 24)

    @cached_property
    def seed(self) -> int:
        """The cell's stream. Excludes n_train and the model count for reasons of nesting: a
        sampler's candidate i is the same network at every N, so nested training sets give
        nested acceptances, and asking for more models extends a stream instead of redrawing it.
        Excludes the tie rule too: under either rule a cell tries the same candidates, so the
        two rules are compared on the very same networks."""
        excluded = ("n_train", "models", "budget", "tie_rule")
        stream = {k: v for k, v in self.identity.items() if k not in excluded}
        return derive_seed(self.suite_seed, stream)

    def plugins_used(self, metrics: tuple[str, ...] = ()) -> list[tuple[str, str]]:
        """(kind, name) of every plugin whose code decides the cell's results: with the engine's
        arithmetic (ENGINE_KEY), what its recorded `plugins` name ("optimizer sgd")."""
        return [
            ("dataset", self.dataset), ("architecture", self.architecture.name), ("prior", self.entry.settings.prior),
            ("sampler" if self.role == "baseline" else "optimizer", self.entry.name),
            *(("metric", name) for name in metrics),
        ]  # fmt: skip

    @property
    def architecture_label(self) -> str:
        return self.architecture.label

    @property
    def role(self) -> str:
        return self.entry.role


def expand(suite: Suite) -> list[Cell]:
    """Every cell of the suite, ordered so that a task is built once and N grows within a stream."""
    cells = []
    for task in suite.tasks:
        pair_seeds = task.class_pair_seeds or (None,) * len(task.classes)
        for classes, class_pair_seed in zip(task.classes, pair_seeds):
            for training_set_seed in task.training_set_seeds:
                for grid in suite.architectures:
                    for architecture in grid.variants():
                        for entry in suite.entries:
                            for n_train in sorted(task.n_train):
                                cells.append(Cell(
                                    task.dataset, classes, n_train, training_set_seed, architecture,
                                    entry, suite.seed, task.training_draw, class_pair_seed, suite.tie_rule,
                                    suite.tuning if entry.tuned else None,
                                ))  # fmt: skip
    return cells
