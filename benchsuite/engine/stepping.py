"""How the host calls an optimizer, in one place for the three training paths.

The contract is OptimizerSpec's docstring and docs/optimizer-contract.md: the host builds the
optimizer (a stack-aware one with `networks=`), calls `train()` before the first step when the
optimizer has it, and per mini-batch sets the scheduled learning rate, computes the loss and its
gradient, then calls `step(closure)` or `step()`; after the last step it calls `eval()` when the
optimizer has it. Every exception from the optimizer becomes one OptimizerStepError.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from benchsuite.engine import stopping
from benchsuite.errors import OptimizerStepError
from benchsuite.records import Networks, OptimizerSpec

CLOSURE_HINT = "if its step needs the closure, declare uses_closure=True in its OptimizerSpec"


def build_optimizer(
    spec: OptimizerSpec,
    tensors: list,
    hyperparameters: Mapping[str, Any],
    networks: Networks | None,
):
    """`spec.factory(tensors, **hyperparameters)`, with `networks=` for a stack-aware optimizer."""
    options = dict(hyperparameters)
    if spec.stacked:
        if networks is None:
            raise ValueError(
                f"optimizer {spec.name!r} is stack-aware: the host must pass its networks"
            )
        options["networks"] = networks
    try:
        return spec.factory(tensors, **options)
    except Exception as error:  # the plugin's own error, named and kept as the cause
        raise OptimizerStepError(spec.name, None, error) from error


def closure_required(optimizer) -> bool:
    """Whether `optimizer.step` cannot be called without a closure (torch.optim.LBFGS)."""
    try:
        parameter = inspect.signature(optimizer.step).parameters.get("closure")
    except (TypeError, ValueError):
        return False
    return parameter is not None and parameter.default is inspect.Parameter.empty


class Stepper:
    """One optimizer as the host drives it: `start()`, `step(closure)` per mini-batch, `finish()`.

    `factors`: the schedule's learning-rate multiplier per step (schedules.Schedule.factors), or
    None for the default constant schedule, which never touches the optimizer's learning rate.
    `closure` says whether `step` receives the closure: the caller builds one only then.
    `loss`: what the closure last returned (a stacked path's [K] losses), for the numerics rule
    when a step fails (engine/divergence.py).
    """

    def __init__(self, optimizer, spec: OptimizerSpec, factors: Sequence[float] | None = None):
        self.optimizer = optimizer
        self.name = spec.name
        self.closure = bool(spec.uses_closure) or closure_required(optimizer)
        self.hint = "" if self.closure else CLOSURE_HINT
        self.factors = factors
        self.index = 0
        self.loss = None
        self.groups: list[dict] = []
        self.base: list[Any] = []
        if factors is not None:
            groups = getattr(optimizer, "param_groups", None)
            if not groups or any(not isinstance(g, dict) or "lr" not in g for g in groups):
                raise OptimizerStepError(
                    self.name, None,
                    ValueError("a learning-rate schedule needs param_groups, each with an 'lr'"),
                )  # fmt: skip
            self.groups = list(groups)
            self.base = [group["lr"] for group in groups]

    def _call(self, method: Callable, step: int | None, *arguments):
        try:
            return method(*arguments)
        except OptimizerStepError:
            raise
        except Exception as error:  # the plugin's own error, named and kept as the cause
            hint = self.hint if "closure" in str(error).lower() else ""
            raise OptimizerStepError(self.name, step, error, hint) from error

    def start(self) -> None:
        """`optimizer.train()` when the optimizer has one (schedule-free: step at y, not x)."""
        train = getattr(self.optimizer, "train", None)
        if callable(train):
            self._call(train, 0)

    def step(self, closure: Callable | None = None):
        """One optimizer step: the scheduled learning rate, then `step(closure)` or `step()`.
        First a stop point (engine/stopping.py): a cell's deadline ends its training here."""
        stopping.check()
        index = self.index
        if self.factors is not None:
            factor = self.factors[index]
            for group, base in zip(self.groups, self.base):
                group["lr"] = base * factor
        if self.closure:
            recorded = None if closure is None else self._recorded(closure)
            loss = self._call(self.optimizer.step, index, recorded)
        else:
            loss = self._call(self.optimizer.step, index)
        self.index = index + 1
        return loss

    def take_steps(self, count: int) -> list[float]:
        """For a kernel that runs the next `count` steps itself (plain SGD fused into convnet.c,
        engine/stacked_conv.py): the deadline checked once, each step's learning rate (param
        group 0's, as step() would set it), and the index and the groups' rates left as `count`
        step() calls leave them. Only for an optimizer whose step is its update alone."""
        stopping.check()
        index, self.index = self.index, self.index + count
        if self.factors is None:
            return [self.optimizer.param_groups[0]["lr"]] * count
        factors = self.factors[index : index + count]
        if count:
            for group, base in zip(self.groups, self.base):
                group["lr"] = base * factors[-1]
        return [self.base[0] * factor for factor in factors]

    def _recorded(self, closure: Callable) -> Callable:
        def recorded():
            self.loss = value = closure()
            return value

        return recorded

    def finish(self) -> None:
        """`optimizer.eval()` when the optimizer has one: the weights it wants evaluated."""
        evaluate = getattr(self.optimizer, "eval", None)
        if callable(evaluate):
            self._call(evaluate, self.index)
