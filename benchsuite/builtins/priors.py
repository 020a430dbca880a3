"""Built-in weight priors of protocol.md; every one is zero-bias."""

from __future__ import annotations

import math

from benchsuite import hookimpl
from benchsuite.records import PriorSpec, kaiming_uniform_bound


def _constant(value: float):
    def scale(fan_in: int) -> float:
        return value

    return scale


def _kaiming_normal_std(fan_in: int) -> float:
    return math.sqrt(2.0 / fan_in)


@hookimpl
def benchsuite_priors():
    return [
        PriorSpec(name="uniform", family="uniform", scale=_constant(1.0), description="U[-1, 1] weights (G&C default)"),
        PriorSpec(name="uniform-0.2", family="uniform", scale=_constant(0.2), description="U[-0.2, 0.2] weights"),
        PriorSpec(
            name="kaiming-uniform",
            family="uniform",
            scale=kaiming_uniform_bound,
            description="U[-b, b], b = sqrt(6 / fan_in) (He, ReLU gain; SGD default)",
        ),
        PriorSpec(name="kaiming-normal", family="normal", scale=_kaiming_normal_std, description="N(0, 2 / fan_in)"),
    ]
