"""Built-in gradient optimizers: torch.optim classes with the hyperparameters a suite may set.

All five have elementwise updates (no norm or statistic across entries), so the host may train K
stacked networks with one optimizer and get K independent runs.
"""

from __future__ import annotations

import torch

from benchsuite import hookimpl
from benchsuite.ranges import interval
from benchsuite.records import OptimizerSpec


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
    """The ranges torch checks only in part (it lets NaN and momentum 1 through): lr, eps and
    weight decay finite and >= 0; momentum and betas in [0, 1); RMSprop's alpha in [0, 1]."""
    for name in ("lr", "eps", "weight_decay"):
        interval(hyperparameters, name, 0.0)
    for name in ("momentum", "beta1", "beta2"):
        interval(hyperparameters, name, 0.0, 1.0)
    interval(hyperparameters, "alpha", 0.0, 1.0, closed_high=True)
    if hyperparameters.get("nesterov") and not hyperparameters.get("momentum", 0) > 0:
        raise ValueError("nesterov: needs momentum > 0")


@hookimpl
def benchsuite_optimizers():
    return [
        OptimizerSpec(
            "sgd",
            torch.optim.SGD,
            {"lr": 0.01, "momentum": 0.0, "weight_decay": 0.0, "nesterov": False},
            elementwise=True,
            check=_check,
            description="plain SGD (protocol: lr 0.01, no momentum, batch 2, 60 epochs)",
        ),
        OptimizerSpec(
            "adam",
            _with_betas(torch.optim.Adam),
            {"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0},
            elementwise=True,
            check=_check,
            description="Adam",
        ),
        OptimizerSpec(
            "adamw",
            _with_betas(torch.optim.AdamW),
            {"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01},
            elementwise=True,
            check=_check,
            description="AdamW (decoupled weight decay)",
        ),
        OptimizerSpec(
            "rmsprop",
            torch.optim.RMSprop,
            {"lr": 0.001, "alpha": 0.99, "eps": 1e-8, "momentum": 0.0, "weight_decay": 0.0},
            elementwise=True,
            check=_check,
            description="RMSprop",
        ),
        OptimizerSpec(
            "adagrad",
            torch.optim.Adagrad,
            {"lr": 0.01, "eps": 1e-10, "weight_decay": 0.0},
            elementwise=True,
            check=_check,
            description="Adagrad",
        ),
    ]
