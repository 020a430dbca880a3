"""Many networks of one architecture as stacked tensors, evaluated in one vmapped call.

The generic path for any nn.Module (torch.func.functional_call under vmap). Engines may add
faster specialised paths, but this one defines the semantics every path must match.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn
from torch.func import functional_call, vmap

from benchsuite.protocol import DEFAULT_TIE_RULE, TIE_RULES
from benchsuite.records import PriorSpec

# BatchNorm affine parameters under every prior (protocol.md).
BATCHNORM_WEIGHT_RANGE = (0.9, 1.1)
BATCHNORM_BIAS_RANGE = (-0.05, 0.05)
# evaluate()'s chunks. They are part of its numbers: a kernel may sum in another order for another
# batch shape (engine/wide.py), so engine/evaluation.py keeps these boundaries.
IMAGES_PER_CALL = 4096
MODELS_PER_CALL = 256


def fan_in(weight: torch.Tensor) -> int:
    """Inputs feeding one output unit: in_features, or in_channels * kernel area."""
    return int(weight.shape[1] * math.prod(weight.shape[2:])) if weight.dim() >= 2 else 1


def _owner_kinds(module: nn.Module) -> dict[str, type]:
    return {
        f"{prefix}.{name}" if prefix else name: type(owner)
        for prefix, owner in module.named_modules()
        for name, _ in owner.named_parameters(recurse=False)
    }


def draw_parameters_(
    module: nn.Module, prior: PriorSpec, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """Fresh parameters of `module` from `prior`: weights i.i.d., biases zero, BatchNorm per protocol.

    Draw order is the order of module.named_parameters(), so a network is a function of its
    generator's seed alone.
    """
    owners = _owner_kinds(module)
    drawn = {}
    for name, param in module.named_parameters():
        value = torch.empty_like(param)
        if issubclass(owners[name], nn.modules.batchnorm._BatchNorm):
            low, high = BATCHNORM_WEIGHT_RANGE if name.endswith("weight") else BATCHNORM_BIAS_RANGE
            value.uniform_(low, high, generator=generator)
        elif name.endswith("bias") or param.dim() < 2:
            value.zero_()
        else:
            prior.sample_(value, fan_in(param), generator=generator)
        drawn[name] = value
    return drawn


def init_stacked(
    module: nn.Module, prior: PriorSpec, seeds: list[int], device: torch.device | str
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Stacked parameters and buffers of len(seeds) networks; network k is drawn from seeds[k]."""
    device = torch.device(device)
    template = module.to(device)
    per_network = []
    for seed in seeds:
        generator = torch.Generator(device=device).manual_seed(int(seed))
        per_network.append(draw_parameters_(template, prior, generator))
    parameters = {name: torch.stack([p[name] for p in per_network]) for name in per_network[0]}
    buffers = {
        name: buf.unsqueeze(0).expand(len(seeds), *buf.shape).clone()
        for name, buf in template.named_buffers()
    }
    return parameters, buffers


class StackedForward:
    """logits[K, B, 2] = K networks (stacked state) applied to one batch x[B, ...] or x[K, B, ...]."""

    def __init__(self, module: nn.Module):
        self.module = module

    def _single(self, parameters, buffers, x):
        return functional_call(self.module, (parameters, buffers), (x,))

    def __call__(
        self,
        parameters: Mapping[str, torch.Tensor],
        buffers: Mapping[str, torch.Tensor],
        x: torch.Tensor,
        per_model_inputs: bool = False,
    ) -> torch.Tensor:
        in_dims = (0, 0, 0 if per_model_inputs else None)
        return vmap(self._single, in_dims=in_dims, randomness="different")(
            dict(parameters), dict(buffers), x
        )


def _predictions(
    logits: torch.Tensor, tie_rule: str, swapped: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicts class 1, predicts class 0) per point; `swapped` reads the two logits exchanged."""
    one, zero = (logits[..., 0], logits[..., 1]) if swapped else (logits[..., 1], logits[..., 0])
    if tie_rule == "argmax":
        return one > zero, zero >= one  # a NaN logit predicts neither class: never a fit
    if tie_rule == "strict":
        return one > zero, zero > one
    raise ValueError(f"unknown tie rule {tie_rule!r}; valid: {', '.join(TIE_RULES)}")


def correct_counts(
    logits: torch.Tensor, labels: torch.Tensor, tie_rule: str = DEFAULT_TIE_RULE, swapped: bool = False
) -> torch.Tensor:
    """Per network, how many of the B points the two logits [..., B, 2] classify right.

    `tie_rule` decides equal logits (TIE_RULES). `swapped=True` counts for the network whose two
    output rows are exchanged (logits read as (l1, l0)), without copying: G&C's output swap.
    """
    predicts_one, predicts_zero = _predictions(logits, tie_rule, swapped)
    right = torch.where(labels.bool(), predicts_one, predicts_zero)
    return right.sum(dim=-1)


def tie_counts(logits: torch.Tensor) -> torch.Tensor:
    """Per network, how many of the B points have exactly equal logits (dead units make these)."""
    return (logits[..., 0] == logits[..., 1]).sum(dim=-1)


@torch.no_grad()
def evaluate(
    module: nn.Module,
    parameters: Mapping[str, torch.Tensor],
    buffers: Mapping[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    tie_rule: str = DEFAULT_TIE_RULE,
    images_per_call: int = IMAGES_PER_CALL,
    models_per_call: int = MODELS_PER_CALL,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(accuracy in [0, 1], number of tied points) of each stacked network on (x, y).

    Chunked over networks and images to bound memory. The definition of evaluation; the host
    evaluates through engine.evaluation.evaluate, which computes the same numbers faster.
    """
    forward = StackedForward(module)
    count = next(iter(parameters.values())).shape[0]
    correct = torch.zeros(count, dtype=torch.long, device=x.device)
    ties = torch.zeros(count, dtype=torch.long, device=x.device)
    for m in range(0, count, models_per_call):
        p = {k: v[m : m + models_per_call] for k, v in parameters.items()}
        b = {k: v[m : m + models_per_call] for k, v in buffers.items()}
        for i in range(0, x.shape[0], images_per_call):
            logits = forward(p, b, x[i : i + images_per_call])
            correct[m : m + models_per_call] += correct_counts(
                logits, y[i : i + images_per_call], tie_rule
            )
            ties[m : m + models_per_call] += tie_counts(logits)
    return correct.double() / x.shape[0], ties


def accuracy(
    module: nn.Module,
    parameters: Mapping[str, torch.Tensor],
    buffers: Mapping[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    tie_rule: str = DEFAULT_TIE_RULE,
    images_per_call: int = IMAGES_PER_CALL,
    models_per_call: int = MODELS_PER_CALL,
) -> torch.Tensor:
    """Accuracy in [0, 1] of each stacked network on (x, y) under `tie_rule`."""
    return evaluate(
        module, parameters, buffers, x, y, tie_rule, images_per_call, models_per_call
    )[0]
