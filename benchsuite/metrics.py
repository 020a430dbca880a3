"""The built-in per-network metrics' computations (named by benchsuite.builtins.metrics).

Each maps a MetricInput (module, stacked parameters and buffers, task tensors) to a tensor [K],
one value per stacked network; the runner computes them after it has checked interpolation.

The two built-in metrics are protocol.md's normalized training cross-entropies ("Scatter
studies"). A raw cross-entropy says little about an interpolating ReLU network: scaling its last
layer by c > 0 keeps every prediction and drives the loss to 0 as c grows. Dividing the logits by
a scale of the network's function removes that freedom, so that the loss measures the margin
relative to the network's own size, and can be set against test accuracy:

- ``train_loss_lipschitz``: logits / L, with L = max over the test images of the input-gradient
  norm ||d(f1 - f0)/dx||_2, an empirical Lipschitz constant of the decision margin.
- ``train_loss_frobenius``: logits / prod_l (||W_l||_F / 3), over the weight tensors W_l of the
  convolutions and linear layers (tensors with two or more dimensions; BatchNorm affine
  parameters and biases are not layers of that product). The division by 3 per layer keeps the
  product near 1 for the protocol's network sizes; it is a constant per architecture, so it shifts
  no ranking between networks of one architecture.

Everything is vectorised over the K networks with torch.func (vmap of grad over stacked
parameters) and chunked over networks and test images so that memory stays bounded.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from benchsuite.records import MetricInput
from benchsuite.stacked import StackedForward

FROBENIUS_DIVISOR = 3.0
MODELS_PER_CALL = 32
IMAGES_PER_CALL = 512


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Evaluate in eval mode (BatchNorm uses the stored statistics, images are independent),
    and give the caller its module back in the mode it had."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def _count(parameters: Mapping[str, torch.Tensor]) -> int:
    return int(next(iter(parameters.values())).shape[0])


def _chunk(stacked: Mapping[str, torch.Tensor], start: int, stop: int) -> dict[str, torch.Tensor]:
    return {k: v[start:stop] for k, v in stacked.items()}


def input_gradient_norms(
    module: nn.Module,
    parameters: Mapping[str, torch.Tensor],
    buffers: Mapping[str, torch.Tensor],
    x: torch.Tensor,
    models_per_call: int = MODELS_PER_CALL,
    images_per_call: int = IMAGES_PER_CALL,
) -> torch.Tensor:
    """||d(f1 - f0)/dx||_2 per network and image: [K, B].

    In eval mode the images of a batch do not interact, so the gradient of the summed margin with
    respect to the whole batch holds every per-image gradient at once: one backward per chunk.
    """

    def summed_margin(p, b, images):
        logits = functional_call(module, (p, b), (images,))
        return (logits[:, 1] - logits[:, 0]).sum()

    per_network = vmap(grad(summed_margin, argnums=2), in_dims=(0, 0, None))
    count = _count(parameters)
    norms = torch.empty(count, x.shape[0], dtype=torch.float64, device=x.device)
    with _eval_mode(module):
        for m in range(0, count, models_per_call):
            p, b = (
                _chunk(parameters, m, m + models_per_call),
                _chunk(buffers, m, m + models_per_call),
            )
            for i in range(0, x.shape[0], images_per_call):
                gradients = per_network(p, b, x[i : i + images_per_call])  # [k, b, C, H, W]
                norms[m : m + models_per_call, i : i + images_per_call] = (
                    gradients.flatten(2).norm(dim=2).double()
                )
    return norms


def lipschitz_estimate(module, parameters, buffers, x_test: torch.Tensor) -> torch.Tensor:
    """Max over the test images of the input-gradient norm of f1 - f0, per network: [K]."""
    return input_gradient_norms(module, parameters, buffers, x_test).amax(dim=1)


def frobenius_scale(module: nn.Module, parameters: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """prod over weight tensors of (||W_l||_F / 3), per network: [K] (float64).

    Layers are the parameters with two or more dimensions per network (conv and linear weights),
    in the module's order; BatchNorm weights and biases are vectors and are left out.
    """
    names = [name for name, p in module.named_parameters() if p.dim() >= 2]
    scale = torch.ones(
        _count(parameters), dtype=torch.float64, device=next(iter(parameters.values())).device
    )
    for name in names:
        weight = parameters[name].detach().double()
        scale = scale * weight.flatten(1).norm(dim=1) / FROBENIUS_DIVISOR
    return scale


@torch.no_grad()
def train_logits(
    module, parameters, buffers, x_train: torch.Tensor, models_per_call: int = MODELS_PER_CALL
):
    """Training-set logits of every network: [K, N, 2], in eval mode."""
    forward = StackedForward(module)
    with _eval_mode(module):
        chunks = [
            forward(
                _chunk(parameters, m, m + models_per_call),
                _chunk(buffers, m, m + models_per_call),
                x_train,
            )
            for m in range(0, _count(parameters), models_per_call)
        ]
    return torch.cat(chunks).double()


def normalized_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """Mean cross-entropy of logits[K, N, 2] / scale[K] against labels [N]: [K].

    A network with scale 0 (its margin is constant) gets NaN: its normalized loss is undefined.
    """
    scale = scale.to(logits.dtype)
    scaled = logits / torch.where(scale > 0, scale, torch.nan).view(-1, 1, 1)
    log_probabilities = torch.log_softmax(scaled, dim=-1)
    picked = log_probabilities.gather(-1, labels.view(1, -1, 1).expand(logits.shape[0], -1, 1))
    return -picked.squeeze(-1).mean(dim=1)


def train_loss_lipschitz(data: MetricInput) -> torch.Tensor:
    """Training cross-entropy of the logits divided by the test-set Lipschitz estimate: [K]."""
    scale = lipschitz_estimate(data.module, data.parameters, data.buffers, data.x_test)
    logits = train_logits(data.module, data.parameters, data.buffers, data.x_train)
    return normalized_cross_entropy(logits, data.y_train, scale)


def train_loss_frobenius(data: MetricInput) -> torch.Tensor:
    """Training cross-entropy of the logits divided by prod_l ||W_l||_F / 3: [K]."""
    scale = frobenius_scale(data.module, data.parameters)
    logits = train_logits(data.module, data.parameters, data.buffers, data.x_train)
    return normalized_cross_entropy(logits, data.y_train, scale)
