"""Geometric complexity (Dherin et al. 2022): how steeply the logits move with the input.

GC = (1/N) sum_i ||J(x_i)||_F^2 over the training images, where J(x) = d f(x) / d x is the
Jacobian of the two logits with respect to the image (2 x C*H*W). A network that is closer to
constant around its training points has a smaller GC; gradient descent is argued to regularize it
implicitly. Like the Lipschitz estimate of the normalized losses it is a property of the function,
not of the parametrization, but it scales with the logits (a network times c has c^2 GC).
"""

from __future__ import annotations

import torch
from torch.func import functional_call, jacrev, vmap

from benchsuite.metrics.common import IMAGES_PER_CALL, MODELS_PER_CALL, chunk, chunks, count, eval_mode
from benchsuite.records import MetricInput


def jacobian_square_norms(module, parameters, buffers, x: torch.Tensor) -> torch.Tensor:
    """||d f(x_i) / d x_i||_F^2 per network and image: [K, B] (float64).

    In eval mode images do not interact, so the Jacobian of the batch-summed logits with respect
    to the batch holds every image's Jacobian: two backward passes (one per logit) per chunk."""

    def summed_logits(p, b, images):
        return functional_call(module, (p, b), (images,)).sum(dim=0)  # [2]

    per_network = vmap(jacrev(summed_logits, argnums=2), in_dims=(0, 0, None))
    total = count(parameters)
    squares = torch.empty(total, x.shape[0], dtype=torch.float64, device=x.device)
    with eval_mode(module):
        for start, stop in chunks(total, MODELS_PER_CALL):
            p, b = chunk(parameters, start, stop), chunk(buffers, start, stop)
            for i in range(0, x.shape[0], IMAGES_PER_CALL):
                jacobians = per_network(p, b, x[i : i + IMAGES_PER_CALL])  # [k, 2, B, C, H, W]
                squares[start:stop, i : i + IMAGES_PER_CALL] = (
                    jacobians.double().square().transpose(1, 2).flatten(2).sum(dim=2)
                )
    return squares


def geometric_complexity(data: MetricInput) -> torch.Tensor:
    """Mean over the training images of the squared Frobenius norm of the logits' input Jacobian: [K]."""
    return jacobian_square_norms(data.module, data.parameters, data.buffers, data.x_train).mean(dim=1)
