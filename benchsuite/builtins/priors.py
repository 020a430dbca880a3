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
        PriorSpec("uniform", "uniform", _constant(1.0), "U[-1, 1] weights (G&C default)"),
        PriorSpec("uniform-0.2", "uniform", _constant(0.2), "U[-0.2, 0.2] weights"),
        PriorSpec(
            "kaiming-uniform",
            "uniform",
            kaiming_uniform_bound,
            "U[-b, b], b = sqrt(6 / fan_in) (He, ReLU gain; SGD default)",
        ),
        PriorSpec("kaiming-normal", "normal", _kaiming_normal_std, "N(0, 2 / fan_in)"),
    ]
