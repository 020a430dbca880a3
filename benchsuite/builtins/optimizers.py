"""Built-in gradient optimizers: torch.optim classes with the hyperparameters a suite may set.

sgd, adam, adamw, rmsprop and adagrad have elementwise updates (no norm or statistic across
entries), so the host may train K stacked networks with one optimizer and get K independent runs.
sam and sgld own their step and are stack-aware (builtins/stacked_optimizers.py): SAM's gradient
norm and SGLD's noise are each network's own, so they train stacked too.
"""

from __future__ import annotations

import torch

from benchsuite import hookimpl
from benchsuite.builtins.stacked_optimizers import SAM, SGLD
from benchsuite.records import Hyperparameter, OptimizerSpec, Search


def _with_betas(optimizer_class):
    """Suites hold scalars only: take beta1/beta2 and hand torch its `betas` pair."""

    def factory(params, beta1, beta2, **hyperparameters):
        return optimizer_class(params, betas=(beta1, beta2), **hyperparameters)

    factory.__name__ = optimizer_class.__name__
    factory.optimizer_class = optimizer_class  # what it builds (stacked_mlp.flat_optimizer_ok)
    factory.torch_arguments = _torch_arguments  # how it renames (stacked_optim)
    return factory


def _torch_arguments(beta1, beta2, **hyperparameters) -> dict:
    return {"betas": (beta1, beta2), **hyperparameters}


def _check(hyperparameters):
    """What one declaration cannot say: Nesterov momentum needs momentum."""
    if hyperparameters.get("nesterov") and not hyperparameters.get("momentum", 0) > 0:
        raise ValueError("nesterov: needs momentum > 0")


# The ranges torch checks only in part (it lets NaN and momentum 1 through).
def _lr(default: float) -> Hyperparameter:
    return Hyperparameter(float, default, low=0.0, search=Search(1e-5, 1.0), help="learning rate")


def _fraction(default: float, help: str = "") -> Hyperparameter:
    return Hyperparameter(float, default, low=0.0, high=1.0, open_high=True, help=help)


def _nonnegative(default: float, help: str = "") -> Hyperparameter:
    return Hyperparameter(float, default, low=0.0, help=help)


_ADAM = {
    "beta1": _fraction(0.9, "first-moment decay"),
    "beta2": _fraction(0.999, "second-moment decay"),
    "eps": _nonnegative(1e-8, "denominator guard"),
}


@hookimpl
def benchsuite_optimizers():
    return [
        OptimizerSpec(
            name="sgd",
            factory=torch.optim.SGD,
            hyperparameters={
                "lr": _lr(0.01),
                "momentum": _fraction(0.0, "heavy-ball momentum"),
                "weight_decay": _nonnegative(0.0, "L2 penalty"),
                "nesterov": Hyperparameter(bool, False, help="Nesterov momentum (needs momentum > 0)"),
            },
            elementwise=True,
            check=_check,
            description="plain SGD (protocol: lr 0.01, no momentum, batch 2, 60 epochs)",
        ),
        OptimizerSpec(
            name="adam",
            factory=_with_betas(torch.optim.Adam),
            hyperparameters={"lr": _lr(0.001), **_ADAM, "weight_decay": _nonnegative(0.0, "L2 penalty")},
            elementwise=True,
            description="Adam",
        ),
        OptimizerSpec(
            name="adamw",
            factory=_with_betas(torch.optim.AdamW),
            hyperparameters={"lr": _lr(0.001), **_ADAM, "weight_decay": _nonnegative(0.01, "decoupled weight decay")},
            elementwise=True,
            description="AdamW (decoupled weight decay)",
        ),
        OptimizerSpec(
            name="rmsprop",
            factory=torch.optim.RMSprop,
            hyperparameters={
                "lr": _lr(0.001),
                "alpha": Hyperparameter(float, 0.99, low=0.0, high=1.0, help="square-average decay"),
                "eps": _nonnegative(1e-8, "denominator guard"),
                "momentum": _fraction(0.0, "momentum"),
                "weight_decay": _nonnegative(0.0, "L2 penalty"),
            },
            elementwise=True,
            description="RMSprop",
        ),
        OptimizerSpec(
            name="adagrad",
            factory=torch.optim.Adagrad,
            hyperparameters={
                "lr": _lr(0.01),
                "eps": _nonnegative(1e-10, "denominator guard"),
                "weight_decay": _nonnegative(0.0, "L2 penalty"),
            },
            elementwise=True,
            description="Adagrad",
        ),
        OptimizerSpec(
            name="sam",
            factory=SAM,
            hyperparameters={
                "lr": _lr(0.01),
                "momentum": _fraction(0.0, "heavy-ball momentum of the SGD step"),
                "rho": Hyperparameter(
                    float, 0.05, low=0.0, search=Search(0.01, 2.0),
                    help="ascent radius: each step takes its gradient at w + rho g / ||g||",
                ),
            },
            uses_closure=True,
            stacked=True,
            description="SAM over SGD (Foret et al. 2021), gradient norm per network",
        ),
        OptimizerSpec(
            name="sgld",
            factory=SGLD,
            hyperparameters={
                "lr": _lr(0.01),
                "temperature": Hyperparameter(
                    float, 1e-4, low=0.0, search=Search(1e-8, 1.0),
                    help="noise N(0, 2 lr temperature) on every entry after each SGD step",
                ),
            },
            stacked=True,
            description="SGLD: SGD plus Gaussian noise, each network its own noise stream",
        ),
    ]
