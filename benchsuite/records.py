"""Typed records that plugins return from hooks, and the records the host passes around.

Plugins describe *what* (a dataset loader, a module factory, an optimizer factory, a prior, a
sampler); the host owns loops, devices, batching, seeds and storage.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from benchsuite.errors import value_kind
from benchsuite.protocol import DEFAULT_TIE_RULE

if TYPE_CHECKING:  # annotations only: `import benchsuite` (a plugin's first line, the CLI) needs no torch
    import torch
    from torch import nn

# ---------------------------------------------------------------------------------------------
# Datasets


@dataclass(frozen=True)
class DataOptions:
    """Where a dataset may be read from; `download` permits a network fetch (torchvision)."""

    root: Path | None = None
    download: bool = False


@dataclass(frozen=True)
class ImageSplits:
    """A whole labelled image dataset: uint8 or [0, 1] float images shaped [n, C, H, W]."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor


@dataclass(frozen=True, kw_only=True)
class DatasetSpec:
    """A named dataset. `load` reads the full splits (all classes); the host builds tasks from it.

    `holdout_per_class` is how many permuted indices per class are skipped before the training set
    (protocol.md: 128); small datasets such as `digits` need fewer. `train_class_sizes`, where
    known without loading (training images per class, in class order), lets validation refuse an
    N that a class cannot supply; the run checks the loaded files either way.
    """

    name: str
    load: Callable[[DataOptions], ImageSplits]
    description: str = ""
    num_classes: int = 10
    class_names: tuple[str, ...] = ()
    holdout_per_class: int = 128
    input_shape: tuple[int, int, int] | None = None  # (C, H, W), known without loading
    train_class_sizes: tuple[int, ...] | None = None


# ---------------------------------------------------------------------------------------------
# Architectures


@dataclass(frozen=True, kw_only=True)
class ArchitectureSpec:
    """A named architecture: `build(input_shape, width=..., depth=..., bias=...)` -> nn.Module.

    The module maps [batch, C, H, W] to [batch, 2] logits. `width` is a multiplier or a string
    such as "1/6" or "1/6*"; `depth` an int or a variant name ("2c-1f"). The host batches many
    copies with torch.func, so a plugin writes an ordinary module.
    """

    name: str
    build: Callable[..., nn.Module]
    description: str = ""
    default_width: Any = 1
    default_depth: Any = None


# ---------------------------------------------------------------------------------------------
# Priors (initializers)


@dataclass(frozen=True, kw_only=True)
class PriorSpec:
    """A weight prior: every weight i.i.d. from `family` with scale `scale(fan_in)`; biases zero.

    family "uniform": U[-scale, scale]; family "normal": N(0, scale**2). Kept to a family and a
    scale so that fast samplers (counter-based RNG, function-space sampling) can use it.
    BatchNorm affine parameters follow protocol.md (weight U[0.9, 1.1], bias U[-0.05, 0.05]).
    """

    name: str
    family: Literal["uniform", "normal"]
    scale: Callable[[int], float]
    description: str = ""

    def sample_(self, tensor: torch.Tensor, fan_in: int, generator: torch.Generator | None = None):
        """Fill `tensor` in place from this prior."""
        s = float(self.scale(fan_in))
        if self.family == "uniform":
            return tensor.uniform_(-s, s, generator=generator)
        return tensor.normal_(0.0, s, generator=generator)

    @property
    def symmetric(self) -> bool:
        """Both families are symmetric about zero: negating the last layer keeps the prior."""
        return True


def kaiming_uniform_bound(fan_in: int) -> float:
    """PyTorch's kaiming_uniform_ with ReLU gain sqrt(2): bound = sqrt(6 / fan_in)."""
    return math.sqrt(6.0 / fan_in)


# ---------------------------------------------------------------------------------------------
# Declared settings of optimizers and samplers

MAX_INTEGER = 2**63 - 1  # SQLite's largest integer: a larger setting could not be stored
SETTING_TYPES = (float, int, bool, str)


@dataclass(frozen=True)
class Search:
    """Where a tuner may look for a value: [low, high] on a log or linear scale."""

    low: float
    high: float
    scale: Literal["log", "linear"] = "log"

    def __post_init__(self) -> None:
        if self.scale not in ("log", "linear"):
            raise ValueError(f"search scale must be 'log' or 'linear', got {self.scale!r}")
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise ValueError(f"search needs finite low < high, got [{self.low}, {self.high}]")
        if self.scale == "log" and self.low <= 0:
            raise ValueError(f"a log-scale search needs low > 0, got {self.low}")


@dataclass(frozen=True)
class Hyperparameter:
    """One setting a suite may give an optimizer or sampler, declared rather than guessed.

    `Hyperparameter(float, 0.01, low=0.0)` accepts any finite number >= 0 and stores a float, so
    `lr: 1` in a suite is the float 1.0 whatever the default's spelling. `low`/`high` bound
    numbers (inclusive unless `open_low`/`open_high`); `choices` lists valid strings; `words`
    lists strings that a number or boolean setting also accepts (such as "auto"); `search` is
    where a tuner may look. The suite's values are checked against this before anything runs.
    """

    type: type
    default: Any
    _: KW_ONLY
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    choices: tuple[str, ...] = ()
    words: tuple[str, ...] = ()
    search: Search | None = None
    help: str = ""

    def __post_init__(self) -> None:
        if self.type not in SETTING_TYPES:
            raise TypeError(f"type must be one of float, int, bool, str; got {self.type!r}")
        if self.choices and self.type is not str:
            raise TypeError("choices are for str settings; numbers take low/high")
        try:
            self.validate(self.default)
        except ValueError as error:
            raise ValueError(f"default {self.default!r} is not valid: {error}") from None

    def validate(self, value: Any) -> Any:
        """`value` as this setting stores it, or ValueError saying what is valid."""
        if isinstance(value, str) and value in self.words:
            return value
        if self.type is bool:
            if not isinstance(value, bool):
                raise ValueError(f"expected {self._expected()}, got {value_kind(value)}")
            return value
        if self.type is str:
            if not isinstance(value, str) or (self.choices and value not in self.choices):
                raise ValueError(f"expected {self._expected()}, got {value_kind(value)}")
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"expected {self._expected()}, got {value_kind(value)}")  # noqa: TRY004 - the suite reports ValueErrors
        if self.type is int and not isinstance(value, int):
            raise ValueError(f"expected {self._expected()}, got {value_kind(value)}")
        if not math.isfinite(value) or not self._in_range(value):
            raise ValueError(f"expected {self._expected()}, got {value_kind(value)}")
        return float(value) if self.type is float else value

    def _in_range(self, value: float) -> bool:
        low, high = self.low, self.high
        if self.type is int:
            low = max(low, -MAX_INTEGER) if low is not None else -MAX_INTEGER
            high = min(high, MAX_INTEGER) if high is not None else MAX_INTEGER
        if low is not None and (value < low or (self.open_low and value == low)):
            return False
        return high is None or not (value > high or (self.open_high and value == high))

    def _expected(self) -> str:
        if self.type is bool:
            options = ["true", "false"]
        elif self.type is str:
            options = [f"one of {', '.join(map(repr, self.choices))}" if self.choices else "a string"]
        else:
            options = [("an integer" if self.type is int else "a finite number") + self._range()]
        options += [repr(word) for word in self.words]
        return options[0] if len(options) == 1 else f"{', '.join(options[:-1])} or {options[-1]}"

    def _range(self) -> str:
        if self.low is None and self.high is None:
            return ""
        if self.high is None:
            return f" {'>' if self.open_low else '>='} {self.low:g}"
        if self.low is None:
            return f" {'<' if self.open_high else '<='} {self.high:g}"
        return f" in {'(' if self.open_low else '['}{self.low:g}, {self.high:g}{')' if self.open_high else ']'}"

    def describe(self) -> str:
        """One line for `benchsuite plugins NAME`: type, valid values, default, search, help."""
        default = str(self.default).lower() if isinstance(self.default, bool) else repr(self.default)
        text = f"{self.type.__name__}, {self._expected()}; default {default}"
        if self.search is not None:
            text += f"; search [{self.search.low:g}, {self.search.high:g}] {self.search.scale}"
        return text + (f" -- {self.help}" if self.help else "")


class DeclaresSettings:
    """For records whose settings a suite may give (optimizers, samplers, executors): each is a
    Hyperparameter (a bare default would leave its type to be guessed), under the field that
    `SETTINGS_FIELD` names; `declared` and `defaults` read them alike for every kind."""

    SETTINGS_FIELD: ClassVar[str] = "options"

    @property
    def declared(self) -> Mapping[str, Hyperparameter]:
        return getattr(self, self.SETTINGS_FIELD)

    @property
    def defaults(self) -> dict[str, Any]:
        return {name: h.default for name, h in self.declared.items()}

    def __post_init__(self) -> None:
        owner = f"{type(self).__name__} {getattr(self, 'name', '')!r}"
        for name, declared in self.declared.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise TypeError(f"{owner}: setting names must be identifiers, got {name!r}")
            if not isinstance(declared, Hyperparameter):
                raise TypeError(
                    f"{owner}: setting {name!r} must be declared as "
                    f"benchsuite.records.Hyperparameter(type, default, ...), got {declared!r}"
                )


# ---------------------------------------------------------------------------------------------
# Gradient optimizers


@dataclass(frozen=True, kw_only=True)
class Networks:
    """What the host tells a stack-aware optimizer (OptimizerSpec.stacked) about its tensors.

    Every tensor the optimizer steps holds `count` networks along `model_axis` (always 0 today):
    tensor[k] is network k's parameter. `seeds[k]` is network k's own seed for any random numbers
    the optimizer draws (a pure function of the run's seed and the network's attempt index), so
    a network gets the same numbers whichever stack it trains in.
    """

    count: int
    seeds: tuple[int, ...]
    model_axis: int = 0

    def __post_init__(self) -> None:
        if len(self.seeds) != self.count:
            raise ValueError(f"Networks: {self.count} networks but {len(self.seeds)} seeds")


@dataclass(frozen=True, kw_only=True)
class OptimizerSpec(DeclaresSettings):
    """A gradient optimizer: `factory(params, **hyperparameters)` -> a torch.optim-style optimizer.

    `hyperparameters` declares every setting the factory takes (Hyperparameter: type, default,
    valid range); the suite may set only these.

    How the host calls the optimizer (docs/optimizer-contract.md), for every network and every
    mini-batch of the protocol (mean cross-entropy over the batch):
    1. before the first step, `optimizer.train()` if the optimizer has a `train` method;
    2. per step: the learning rate of every param group is set from the suite's schedule
       (`group["lr"] = base_lr * factor(step)`, base_lr the group's lr when built; untouched under
       the default constant schedule); the host zeroes the gradients, computes the current batch's
       loss and its gradient (so `p.grad` holds it), then calls `optimizer.step(closure)` when
       `uses_closure` (or when `step` requires a closure, as LBFGS's does), else
       `optimizer.step()`. The closure zeroes the gradients, re-evaluates the same batch's loss at
       the current weights, backpropagates and returns the loss, as torch.optim's convention has
       it (it may be called any number of times);
    3. after the last step, `optimizer.eval()` if it has one; the host then checks the fit,
       evaluates and stores the weights as they are, so an optimizer that averages (schedule-free)
       is scored at its averaged weights.
    An exception raised by the factory or by a step becomes benchsuite.errors.OptimizerStepError
    (one line: optimizer, step, original error).

    `uses_closure`: the step calls the closure (SAM's second gradient, line searches). False (the
    default): the host calls `step()` alone, so an optimizer that would merely re-evaluate the loss
    (torch.optim's all do when given a closure) costs one evaluation per step, not two.

    How many networks one optimizer instance sees:
    - `elementwise`: the update of each parameter entry depends only on that entry's own history,
      so one optimizer over K stacked networks is exactly K independent optimizers; the host
      stacks them (the factory is called as usual, on stacked tensors);
    - `stacked`: the optimizer couples entries (a norm, a random stream), but only within a
      network: the factory is called as `factory(params, networks=Networks(...), **hyperparameters)`
      on tensors whose leading axis indexes networks, and must keep the networks independent
      (per-network norms over all non-leading dimensions of all tensors; random numbers from
      `networks.seeds`). On this path a closure returns the per-network losses, a tensor [K] (the
      host backpropagates their sum, so each network's gradient is its own);
    - neither (LBFGS, Shampoo, LARS, anything with a norm over a tensor that was not written for
      stacks): one optimizer per network. On MLP and LeNet-family networks each network's
      optimizer holds views of its slices of the stacked tensors and steps on the gradients of
      the stack's forward and backward (path "per_network_stacked"); elsewhere, when the step
      needs the closure, or when it replaces a parameter's storage (`p.data = ...`), the host runs
      one plain module per network, spread over worker threads with single-threaded kernels (path
      "per_network").
    """

    name: str
    factory: Callable[..., Any]
    hyperparameters: Mapping[str, Hyperparameter] = field(default_factory=dict)
    elementwise: bool = False
    description: str = ""
    # checks what the declarations cannot (one value against another) at validation; raises
    # ValueError("name: what is valid")
    check: Callable[[Mapping[str, Any]], None] | None = None
    uses_closure: bool = False
    stacked: bool = False

    SETTINGS_FIELD: ClassVar[str] = "hyperparameters"


# ---------------------------------------------------------------------------------------------
# Per-network metrics


@dataclass(frozen=True, kw_only=True)
class MetricInput:
    """What a metric sees: one population's K stacked networks and its task, on the device.

    `module` is the template network in eval mode; `parameters`/`buffers` are stacked along a
    leading model axis (torch.func style). Every network already fits (x_train, y_train).
    `initial_parameters`: for gradient methods, each network's parameters before training, stacked
    the same way (the host regenerates them from the cell's seed and Population.found_at); None
    for random interpolators, which have no initialization.
    """

    module: nn.Module
    parameters: Mapping[str, torch.Tensor]
    buffers: Mapping[str, torch.Tensor]
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    tie_rule: str = DEFAULT_TIE_RULE
    role: Literal["optimizer", "baseline"] = "optimizer"
    initial_parameters: Mapping[str, torch.Tensor] | None = None


@dataclass(frozen=True, kw_only=True)
class MetricSpec:
    """A named per-network metric: `compute(MetricInput)` -> a [K] tensor, one value per network.

    Compute all K at once (vmap, batched matmuls): the value of network k must not depend on the
    other networks of the stack (check-plugin compares it with each network computed alone).
    NaN marks a value that is undefined for that network. `label` names the quantity on axes.
    `scope="population"` declares a value that compares network k with the other networks of its
    population (such as their disagreement): the host always passes the whole population, and
    check-plugin checks that reordering the networks reorders the values instead.
    """

    name: str
    compute: Callable[[MetricInput], torch.Tensor]
    label: str = ""
    description: str = ""
    scope: Literal["network", "population"] = "network"

    def __post_init__(self) -> None:
        if self.scope not in ("network", "population"):
            raise ValueError(f"metric {self.name!r}: scope must be 'network' or 'population', got {self.scope!r}")


# ---------------------------------------------------------------------------------------------
# Random-interpolator samplers and their output


@dataclass(kw_only=True)
class Population:
    """K networks of one architecture, stacked along a leading model axis, all fitting the task.

    `parameters`/`buffers` are torch.func-style stacked state (see torch.func.stack_module_state).
    `found_at[k]` says how network k was found: its candidate index (samplers, so it can be
    regenerated from the seed) or its attempt index (gradient training).
    """

    parameters: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor]
    found_at: torch.Tensor
    candidates_tried: int
    seconds: float
    epochs: int | None = None
    exhausted: bool = False  # the budget ran out before `target` networks were found
    # Samplers that estimate rather than count (MCMC, SMC): estimates["neg_log2_p_fit"] replaces
    # -log2(found / candidates_tried), with its diagnostics beside it; `chains[k]` says which
    # independent chain network k came from (the host checks agreement between chains).
    estimates: dict[str, float] = field(default_factory=dict)
    chains: torch.Tensor | None = None
    # gradient training: networks whose parameters ended NaN or inf (a diverged loss); they never
    # fit, and a cell that found no network but had some diverge is recorded as "diverged"
    diverged: int = 0

    @property
    def size(self) -> int:
        return int(self.found_at.numel())


class ProgressCallback(Protocol):
    def __call__(self, accepted: int, work: int) -> None:
        """`accepted` networks found so far; `work` candidates tried (samplers) or networks trained."""


@dataclass(frozen=True, kw_only=True)
class SamplingRequest:
    """Everything a sampler needs for one cell. The host owns seed, device and budget."""

    module: nn.Module  # template network, on `device`
    x_train: torch.Tensor  # [N, C, H, W], normalized, on device
    y_train: torch.Tensor  # [N] in {0, 1}
    prior: PriorSpec
    target: int  # interpolating networks to deliver
    max_candidates: int  # budget
    seed: int
    device: torch.device
    options: Mapping[str, Any] = field(default_factory=dict)  # the sampler's own, validated
    progress: ProgressCallback | None = None
    # how equal logits are decided (benchsuite.protocol.TIE_RULES): a sampler must accept exactly
    # the networks that benchsuite.stacked.accuracy(..., tie_rule) says fit
    tie_rule: str = DEFAULT_TIE_RULE


@dataclass(frozen=True, kw_only=True)
class SamplerSpec(DeclaresSettings):
    """A random-interpolator baseline: `sample(SamplingRequest)` -> Population of fitting networks."""

    name: str
    sample: Callable[[SamplingRequest], Population]
    options: Mapping[str, Hyperparameter] = field(default_factory=dict)
    description: str = ""
    # options that change speed but never which networks are accepted (chunk sizes, threads...):
    # left out of a cell's identity and seed, so tuning them neither reruns nor redraws a cell
    performance_options: frozenset[str] = frozenset()
    # checks a suite's options at validation, like OptimizerSpec.check
    check: Callable[[Mapping[str, Any]], None] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = set(self.performance_options) - set(self.options)
        if unknown:
            raise ValueError(f"sampler {self.name!r}: performance_options {sorted(unknown)} are not options")


# ---------------------------------------------------------------------------------------------
# Reporters: output formats of a leaderboard


@dataclass(frozen=True, kw_only=True)
class ReporterSpec:
    """An output format: `render(rows, title=..., figures=...) -> str`, written as
    leaderboard.<suffix>. `rows` are the leaderboard's rows (dicts, the columns of
    leaderboard.csv; with `.comparisons`, `.ranking`, `.win_rates` when statistics were computed);
    `figures` are (caption, PNG bytes) pairs a format may embed. A format ignores what it does not
    show. Built-in: md, csv, json, latex, html."""

    name: str
    suffix: str
    render: Callable[..., str]
    description: str = ""

    def __post_init__(self) -> None:
        if not (isinstance(self.suffix, str) and self.suffix.isalnum() and self.suffix.isascii() and len(self.suffix) <= 10):
            raise ValueError(f"reporter {self.name!r}: suffix must be 1-10 ASCII letters or digits, got {self.suffix!r}")


# ---------------------------------------------------------------------------------------------
# Executors: how the cells of a run are executed


def _no_report(_event: tuple) -> None:
    return None


def _no_job() -> Callable:
    raise NotImplementedError("this plan has no job to run elsewhere")


@dataclass(frozen=True, kw_only=True)
class ExecutionPlan:
    """The unfinished cells of a run as units, and how to run one unit here or elsewhere.

    A unit's cells must run in one process, in order (gradient cells that train in one stack, or
    a sampler's cells that differ only in N and reuse its decisions); units are independent of
    one another, so an executor may run them in any order and anywhere. Every finished cell is
    a benchsuite.execution.cells.CellOutcome: plain, picklable data, what the store keeps.
    - `run_unit(unit)` runs a unit in this process and yields each cell as it finishes.
    - `make_job()` returns a picklable job to send to another process (raising a one-line
      error if the run's plugins cannot be loaded there): `job(unit, report)` rebuilds the
      plugins, data and device it needs (once per process) and yields the same outcomes;
      `report` takes its progress events (small tuples), which the executor hands back to
      `report` here (so the display stays live; dropping them loses nothing but the display).
    - `options`: the executor's declared options as given (`--jobs`, `--address`), validated.
    - `memory(unit)`: bytes the unit plans to hold on the device (None: unknown), to size a
      scheduler's resource request (a GPU fraction).
    - `device`: the run's device ("cpu", "cuda:0", ...).
    """

    units: tuple[tuple[Any, ...], ...]
    run_unit: Callable[[tuple[Any, ...]], Iterator[Any]]
    make_job: Callable[[], Callable[..., Iterator[Any]]] = _no_job
    report: Callable[[tuple], None] = _no_report
    options: Mapping[str, Any] = field(default_factory=dict)
    memory: Callable[[tuple[Any, ...]], int | None] = lambda unit: None
    device: str = "cpu"


@dataclass(frozen=True, kw_only=True)
class ExecutorSpec(DeclaresSettings):
    """A way to execute a run: `execute(ExecutionPlan)` yields every cell's outcome as it finishes.

    The host alone writes what is yielded to the store, in the order it arrives, so an executor
    never touches results.sqlite; a cell yielded twice (a retried unit) is written once, and a
    cell never yielded is simply run again on resume. Results do not depend on the executor:
    each cell's seed depends only on the cell. `options` declares the settings the executor takes
    (`benchsuite run --jobs N` sets `jobs`, `--address` sets `address`); their values arrive in
    `ExecutionPlan.options`.
    """

    name: str
    execute: Callable[[ExecutionPlan], Iterator[Any]]
    options: Mapping[str, Hyperparameter] = field(default_factory=dict)
    description: str = ""

