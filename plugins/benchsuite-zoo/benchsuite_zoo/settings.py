"""Declarations shared by the zoo's optimizers: every setting typed, bounded and documented, and
a search space for every learning rate, so a tuner knows where to look."""

from __future__ import annotations

from benchsuite.records import Hyperparameter, Search

# Learning-rate search spaces (log scale), by how the optimizer's step scales with lr:
ADAPTIVE = Search(1e-5, 1e-1)  # normalized steps (Adam family, sign methods): lr is the step size
SGD_LIKE = Search(1e-4, 1.0)  # steps proportional to the gradient
LARGE_SGD = Search(1e-3, 10.0)  # SGD-like methods whose usual rates are large (LARS, schedule-free SGD)
MULTIPLIER = Search(0.1, 10.0)  # lr multiplies a step size the optimizer estimates (Prodigy)


def lr(default: float, search: Search = ADAPTIVE) -> Hyperparameter:
    return Hyperparameter(float, default, low=0.0, open_low=True, search=search, help="learning rate")


def fraction(default: float, help: str = "") -> Hyperparameter:
    """A decay rate or momentum in [0, 1)."""
    return Hyperparameter(float, default, low=0.0, high=1.0, open_high=True, help=help)


def unit(default: float, help: str = "") -> Hyperparameter:
    """A share in [0, 1]."""
    return Hyperparameter(float, default, low=0.0, high=1.0, help=help)


def steps(default: int, help: str = "") -> Hyperparameter:
    return Hyperparameter(int, default, low=0, help=help)


def nonnegative(default: float, help: str = "") -> Hyperparameter:
    return Hyperparameter(float, default, low=0.0, help=help)


def positive(default: float, help: str = "") -> Hyperparameter:
    return Hyperparameter(float, default, low=0.0, open_low=True, help=help)


def count(default: int, help: str = "") -> Hyperparameter:
    return Hyperparameter(int, default, low=1, help=help)


def flag(default: bool, help: str = "") -> Hyperparameter:
    return Hyperparameter(bool, default, help=help)


def choice(default: str, choices: tuple[str, ...], help: str = "") -> Hyperparameter:
    return Hyperparameter(str, default, choices=choices, help=help)


def betas(*defaults: float) -> dict[str, Hyperparameter]:
    """beta1, beta2[, beta3]: suites hold scalars, the factory hands the package its tuple."""
    helps = ("first-moment decay", "second-moment decay", "third decay rate")
    return {f"beta{i + 1}": fraction(value, helps[i]) for i, value in enumerate(defaults)}


def weight_decay(default: float = 0.0) -> dict[str, Hyperparameter]:
    return {"weight_decay": nonnegative(default, "weight decay (the package's default coupling)")}


def eps(default: float) -> dict[str, Hyperparameter]:
    return {"eps": nonnegative(default, "denominator guard")}
