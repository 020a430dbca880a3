"""Factories: how a suite's scalar settings become a pytorch-optimizer constructor call.

benchsuite calls `factory(params, **settings)` with a flat list of parameters and only the
declared settings, so tuples (betas), base optimizers (Lookahead, SAM) and parameter groups
(Muon) are built here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

BETA_NAMES = ("beta1", "beta2", "beta3")


def with_betas(optimizer_class: type, betas: int = 2, **fixed: Any) -> Callable[..., Any]:
    """`optimizer_class(params, betas=(beta1, ...), **fixed, **settings)`; `fixed` holds the
    package arguments the zoo pins (documented in the README), never a suite's."""

    def factory(params, **settings):
        values = tuple(settings.pop(name) for name in BETA_NAMES[:betas])
        return optimizer_class(params, betas=values, **fixed, **settings)

    factory.__name__ = factory.__qualname__ = optimizer_class.__name__
    return factory


def plain(optimizer_class: type, **fixed: Any) -> Callable[..., Any]:
    """`optimizer_class(params, **fixed, **settings)`."""

    def factory(params, **settings):
        return optimizer_class(params, **fixed, **settings)

    factory.__name__ = factory.__qualname__ = optimizer_class.__name__
    return factory


def lookahead_adam(params, lr, beta1, beta2, eps, weight_decay, k, alpha):
    """Lookahead (Zhang et al. 2019) over torch's Adam: every k steps the fast weights move
    alpha of the way from the slow weights and both become that point."""
    from pytorch_optimizer import Lookahead

    inner = torch.optim.Adam(params, lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay)
    return Lookahead(inner, k=k, alpha=alpha)


def muon(params, lr, momentum, nesterov, ns_steps, weight_decay, adamw_lr):
    """Muon (Jordan et al. 2024) as its authors use it: hidden weight matrices (every parameter
    with two or more dimensions except the last, the classifier head) step with orthogonalized
    momentum; biases and the head step with the AdamW that Muon carries (lr `adamw_lr`)."""
    from pytorch_optimizer import Muon

    params = list(params)
    matrices = [p for p in params if p.ndim >= 2]
    hidden = {id(p) for p in matrices[:-1]}
    groups = [
        {"params": [p for p in params if id(p) in hidden], "use_muon": True},
        {"params": [p for p in params if id(p) not in hidden], "use_muon": False},
    ]
    groups = [group for group in groups if group["params"]]
    return Muon(
        groups, lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps,
        weight_decay=weight_decay, adamw_lr=adamw_lr,
    )  # fmt: skip


def asam(params, lr, momentum, rho):
    """ASAM (Kwon et al. 2021): pytorch-optimizer's SAM with adaptive=True (the ascent scaled by
    the weights' magnitude) over SGD; it calls the closure for its second gradient."""
    from pytorch_optimizer import SAM

    return SAM(params, torch.optim.SGD, rho=rho, adaptive=True, lr=lr, momentum=momentum)
