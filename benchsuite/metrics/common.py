"""What every metric computation shares: eval mode, chunks of the stack, the weight layers, logits.

A metric sees K networks stacked along a leading axis; it must give network k the value it would
get alone, so everything here works per network and chunks the stack only to bound memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn

from benchsuite.stacked import StackedForward

MODELS_PER_CALL = 32
IMAGES_PER_CALL = 512


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Evaluate in eval mode (BatchNorm uses the stored statistics, images are independent),
    and give the caller its module back in the mode it had."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def count(parameters: Mapping[str, torch.Tensor]) -> int:
    """How many networks are stacked."""
    return int(next(iter(parameters.values())).shape[0])


def chunk(stacked: Mapping[str, torch.Tensor], start: int, stop: int) -> dict[str, torch.Tensor]:
    """Networks [start, stop) of a stacked state."""
    return {k: v[start:stop] for k, v in stacked.items()}


def chunks(count_: int, size: int = MODELS_PER_CALL) -> Iterator[tuple[int, int]]:
    """(start, stop) of consecutive chunks of `size` networks."""
    for start in range(0, count_, size):
        yield start, min(start + size, count_)


def weight_names(module: nn.Module) -> list[str]:
    """The layers' weight tensors in the module's order: parameters with two or more dimensions
    per network (convolution and linear weights; biases and BatchNorm affine vectors are not)."""
    return [name for name, p in module.named_parameters() if p.dim() >= 2]


def device_of(parameters: Mapping[str, torch.Tensor]) -> torch.device:
    return next(iter(parameters.values())).device


@torch.no_grad()
def stacked_logits(
    module: nn.Module, parameters, buffers, x: torch.Tensor, models_per_call: int = MODELS_PER_CALL
) -> torch.Tensor:
    """Logits of every network on x: [K, B, 2] (float64), in eval mode."""
    forward = StackedForward(module)
    with eval_mode(module):
        pieces = [
            forward(chunk(parameters, start, stop), chunk(buffers, start, stop), x)
            for start, stop in chunks(count(parameters), models_per_call)
        ]
    return torch.cat(pieces).double()
