"""Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms") as a benchsuite plugin.

The update is a sign of an interpolated momentum: every entry depends only on its own history,
so the optimizer is elementwise and benchsuite may train many networks under one instance.
"""

from __future__ import annotations

import torch

from benchsuite import hookimpl
from benchsuite.records import Hyperparameter, OptimizerSpec, Search


class Lion(torch.optim.Optimizer):
    """update = sign(beta1 * m + (1 - beta1) * g); p -= lr * (update + weight_decay * p);
    m = beta2 * m + (1 - beta2) * g."""

    def __init__(self, params, lr: float = 1e-4, beta1: float = 0.9, beta2: float = 0.99, weight_decay: float = 0.0):
        if lr <= 0:
            raise ValueError(f"lr must be positive, got {lr}")
        super().__init__(params, dict(lr=lr, beta1=beta1, beta2=beta2, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["momentum"] = torch.zeros_like(p)
                momentum = state["momentum"]
                update = (momentum * group["beta1"] + p.grad * (1 - group["beta1"])).sign_()
                p.mul_(1 - group["lr"] * group["weight_decay"]).add_(update, alpha=-group["lr"])
                momentum.mul_(group["beta2"]).add_(p.grad, alpha=1 - group["beta2"])
        return loss


@hookimpl
def benchsuite_optimizers():
    return [
        OptimizerSpec(
            name="lion",
            factory=Lion,
            hyperparameters={
                "lr": Hyperparameter(float, 1e-4, low=0.0, search=Search(1e-6, 1e-2)),
                "beta1": Hyperparameter(float, 0.9, low=0.0, high=1.0, open_high=True),
                "beta2": Hyperparameter(float, 0.99, low=0.0, high=1.0, open_high=True),
                "weight_decay": Hyperparameter(float, 0.0, low=0.0),
            },
            elementwise=True,
            description="Lion: sign of interpolated momentum (Chen et al. 2023)",
        )
    ]
