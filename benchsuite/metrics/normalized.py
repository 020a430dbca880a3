"""Normalized training cross-entropies and normalized margins: the logits divided by a scale of
the network's own function.

A raw cross-entropy or margin says little about an interpolating ReLU network: scaling its last
layer by c > 0 keeps every prediction and multiplies every logit by c. Dividing the logits by a
scale of the network's function removes that freedom, so that loss and margin measure the fit
relative to the network's own size, and can be set against test accuracy (protocol.md, "Scatter
studies"). Two scales, shared by the losses and the margins:

- Lipschitz: L = max over the test images of the input-gradient norm ||d(f1 - f0)/dx||_2, an
  empirical Lipschitz constant of the decision margin (Peleg & Hein's Lipschitz normalization).
- Frobenius: prod_l (||W_l||_F / 3) over the weight tensors W_l of the convolutions and linear
  layers (tensors with two or more dimensions; BatchNorm affine parameters and biases are not
  layers of that product). The division by 3 per layer keeps the product near 1 for the
  protocol's network sizes; it is a constant per architecture, so it shifts no ranking between
  networks of one architecture.

The margin of network k is its smallest signed training margin, min_i (f_{y_i} - f_{1-y_i})(x_i),
divided by the scale. With the Lipschitz scale it reads as a distance in input space (a lower
bound on the distance of the nearest training image to the decision boundary, if L held
everywhere); with the Frobenius scale it is the classic weight-normalized margin.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from benchsuite.engine.stacked_conv import native_margin_norms
from benchsuite.engine.stacked_resnet import native_resnet_margin_norms
from benchsuite.metrics.common import (
    IMAGES_PER_CALL,
    MODELS_PER_CALL,
    chunk,
    chunks,
    count,
    device_of,
    eval_mode,
    stacked_logits,
    weight_names,
)
from benchsuite.metrics.input_gradients import (
    faster,
    first_convolutions,
    margin_gradient_norms,
    plan,
)
from benchsuite.records import MetricInput

FROBENIUS_DIVISOR = 3.0
SEQUENTIAL_MODELS_PER_CALL = 8  # networks whose first convolutions run as one


def input_gradient_norms(
    module: nn.Module,
    parameters: Mapping[str, torch.Tensor],
    buffers: Mapping[str, torch.Tensor],
    x: torch.Tensor,
    models_per_call: int = MODELS_PER_CALL,
    images_per_call: int = IMAGES_PER_CALL,
) -> torch.Tensor:
    """||d(f1 - f0)/dx||_2 per network and image: [K, B].

    Plain sequential ReLU networks that start with a convolution (the LeNet family) take the
    compiled kernel where it is built and takes them (engine.stacked_conv.native_margin_norms:
    each network at each image alone; 1.6-3.7x the written-out path), else a written-out backward,
    one network at a time (metrics/input_gradients.py); ResNet4 in eval mode its own kernel
    (engine.stacked_resnet.native_resnet_margin_norms); every other module the vmapped autograd
    below. All agree to float32 rounding, except at images on a kink of the network (a max-pool
    near-tie or a ReLU at zero that two roundings decide differently: one image of 16,000 in a
    LeNet w=1 check against the compiled kernel), where each is the exact gradient of its rounding.
    In eval mode the images of a batch do not interact, so the gradient of the summed margin with
    respect to the whole batch holds every per-image gradient at once: one backward per chunk.
    """
    layers = plan(module)
    if layers is not None and faster(layers):
        compiled = native_margin_norms(module, parameters, x)
        if compiled is not None:
            return compiled
        return _sequential_gradient_norms(
            layers, parameters, x, min(models_per_call, SEQUENTIAL_MODELS_PER_CALL), images_per_call
        )
    compiled = native_resnet_margin_norms(module, parameters, buffers, x)
    if compiled is not None:
        return compiled
    return vmapped_gradient_norms(module, parameters, buffers, x, models_per_call, images_per_call)


def _sequential_gradient_norms(layers, parameters, x, models_per_call: int, images_per_call: int):
    """One network after another (plain kernels on a batch of images beat vmap's grouped ones),
    but the first convolution of a chunk of networks at once (their input is shared)."""
    norms = torch.empty(count(parameters), x.shape[0], dtype=torch.float64, device=x.device)
    for start, stop in chunks(norms.shape[0], models_per_call):
        stack = chunk(parameters, start, stop)
        for i in range(0, x.shape[0], images_per_call):
            images = x[i : i + images_per_call]
            firsts = first_convolutions(layers, stack, images) or [None] * (stop - start)
            for k, first in enumerate(firsts):
                network = {name: value[k] for name, value in stack.items()}
                norms[start + k, i : i + images_per_call] = margin_gradient_norms(
                    layers, network, images, first
                )
    return norms


def vmapped_gradient_norms(module, parameters, buffers, x, models_per_call, images_per_call):
    """The general path: vmap over networks of autograd's gradient of the summed margin."""

    def summed_margin(p, b, images):
        logits = functional_call(module, (p, b), (images,))
        return (logits[:, 1] - logits[:, 0]).sum()

    per_network = vmap(grad(summed_margin, argnums=2), in_dims=(0, 0, None))
    total = count(parameters)
    norms = torch.empty(total, x.shape[0], dtype=torch.float64, device=x.device)
    with eval_mode(module):
        for m in range(0, total, models_per_call):
            p, b = chunk(parameters, m, m + models_per_call), chunk(buffers, m, m + models_per_call)
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
    scale = torch.ones(count(parameters), dtype=torch.float64, device=device_of(parameters))
    for name in weight_names(module):
        weight = parameters[name].detach().double()
        scale = scale * weight.flatten(1).norm(dim=1) / FROBENIUS_DIVISOR
    return scale


def train_logits(module, parameters, buffers, x_train: torch.Tensor, models_per_call: int = MODELS_PER_CALL):
    """Training-set logits of every network: [K, N, 2] (float64), in eval mode."""
    return stacked_logits(module, parameters, buffers, x_train, models_per_call)


def _positive(scale: torch.Tensor, dtype) -> torch.Tensor:
    """The scale, NaN where it is not positive (a constant margin: nothing to normalize by)."""
    scale = scale.to(dtype)
    return torch.where(scale > 0, scale, torch.nan)


def normalized_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """Mean cross-entropy of logits[K, N, 2] / scale[K] against labels [N]: [K].

    A network with scale 0 (its margin is constant) gets NaN: its normalized loss is undefined.
    """
    scaled = logits / _positive(scale, logits.dtype).view(-1, 1, 1)
    log_probabilities = torch.log_softmax(scaled, dim=-1)
    picked = log_probabilities.gather(-1, labels.view(1, -1, 1).expand(logits.shape[0], -1, 1))
    return -picked.squeeze(-1).mean(dim=1)


def signed_margins(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """f_y - f_{1-y} per network and point: [K, N]; positive where the point is classified right."""
    sign = 2.0 * labels.to(logits.dtype) - 1.0
    return sign.view(1, -1) * (logits[..., 1] - logits[..., 0])


def normalized_margin(logits: torch.Tensor, labels: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Smallest signed training margin divided by scale[K]: [K]; NaN where the scale is 0."""
    return signed_margins(logits, labels).amin(dim=1) / _positive(scale, logits.dtype)


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


def margin_lipschitz(data: MetricInput) -> torch.Tensor:
    """Smallest training margin divided by the test-set Lipschitz estimate: [K]."""
    scale = lipschitz_estimate(data.module, data.parameters, data.buffers, data.x_test)
    logits = train_logits(data.module, data.parameters, data.buffers, data.x_train)
    return normalized_margin(logits, data.y_train, scale)


def margin_frobenius(data: MetricInput) -> torch.Tensor:
    """Smallest training margin divided by prod_l ||W_l||_F / 3: [K]."""
    scale = frobenius_scale(data.module, data.parameters)
    logits = train_logits(data.module, data.parameters, data.buffers, data.x_train)
    return normalized_margin(logits, data.y_train, scale)
