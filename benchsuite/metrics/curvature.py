"""Sharpness of the training loss: the top Hessian eigenvalue and the Hessian trace, per network.

The loss is the one the optimizers minimize, the mean cross-entropy of the raw logits over the
training set, in eval mode; the Hessian is with respect to every parameter of the network. Both
quantities use Hessian-vector products only (forward-over-reverse: torch.func.jvp of grad),
vmapped over the stacked networks, so no Hessian is ever formed:

- top eigenvalue: POWER_ITERATIONS steps of power iteration v <- Hv / ||Hv|| from one start vector;
  the value is the Rayleigh quotient v^T H v of the last normalized iterate (POWER_ITERATIONS
  products in all). Power iteration finds the eigenvalue largest in magnitude; at an interpolating
  network the Hessian is close to positive semi-definite, so that is the top one, and its sign is
  kept as computed.
- trace: Hutchinson's estimator, the mean of z^T H z over HUTCHINSON_PROBES Rademacher vectors z.

The start vector and the probes are drawn once on the CPU (float32) from generators seeded with
CURVATURE_SEED and CURVATURE_SEED + 1, over one network's parameters flattened in the order of
module.named_parameters(): every network, in any stack and on any device, gets the same vectors.
Sharpness is not invariant to reparametrization (scaling one ReLU layer up and the next down
changes it; Dinh et al. 2017): read it beside the normalized margins.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jvp, vmap

from benchsuite.metrics.common import chunk, chunks, count, eval_mode
from benchsuite.records import MetricInput

POWER_ITERATIONS = 20
HUTCHINSON_PROBES = 32
PROBES_PER_CALL = 8
CURVATURE_SEED = 0
MODELS_PER_CALL = 16


def start_vector(module: nn.Module, seed: int = CURVATURE_SEED) -> torch.Tensor:
    """The power iteration's start: one standard normal vector over a network's parameters."""
    size = sum(p.numel() for p in module.parameters())
    return torch.randn(size, generator=torch.Generator().manual_seed(seed))


def rademacher_probes(module: nn.Module, probes: int = HUTCHINSON_PROBES, seed: int = CURVATURE_SEED + 1) -> torch.Tensor:
    """Hutchinson's probes: [probes, parameters] of +-1."""
    size = sum(p.numel() for p in module.parameters())
    bits = torch.randint(0, 2, (probes, size), generator=torch.Generator().manual_seed(seed))
    return (2 * bits - 1).float()


def _unflatten(vector: torch.Tensor, shapes: Mapping[str, torch.Size]) -> dict[str, torch.Tensor]:
    """A flat vector [..., P] as a parameter dictionary [..., *shape] in named_parameters order."""
    pieces, start = {}, 0
    for name, shape in shapes.items():
        size = shape.numel()
        pieces[name] = vector[..., start : start + size].reshape(*vector.shape[:-1], *shape)
        start += size
    return pieces


def _flatten(tree: Mapping[str, torch.Tensor], shapes: Mapping[str, torch.Size]) -> torch.Tensor:
    """The inverse of _unflatten: [..., P]."""
    return torch.cat([tree[n].reshape(*tree[n].shape[: tree[n].dim() - len(s)], -1) for n, s in shapes.items()], dim=-1)


def _hvp(module: nn.Module, x: torch.Tensor, y: torch.Tensor):
    """hvp(parameters, buffers, vector) -> H vector, for one network (to be vmapped)."""

    def loss(parameters, buffers):
        return F.cross_entropy(functional_call(module, (parameters, buffers), (x,)), y)

    gradient = grad(loss)

    def product(parameters, buffers, vector):
        return jvp(lambda p: gradient(p, buffers), (parameters,), (vector,))[1]

    return product


class HessianProducts:
    """Hessian-vector products of the training loss for a chunk of stacked networks."""

    def __init__(self, module: nn.Module, parameters, buffers, x: torch.Tensor, y: torch.Tensor):
        self.shapes = {n: p.shape for n, p in module.named_parameters()}
        self.parameters = {n: parameters[n].detach() for n in self.shapes}
        self.buffers = dict(buffers)
        product = _hvp(module, x, y.long())
        self.per_network = vmap(product)  # one vector per network
        self.per_probe = vmap(vmap(product, in_dims=(None, None, 0)), in_dims=(0, 0, None))  # shared probes

    def __call__(self, vectors: torch.Tensor) -> torch.Tensor:
        """vectors [k, P] -> H_k v_k [k, P]."""
        tree = _unflatten(vectors, self.shapes)
        return _flatten(self.per_network(self.parameters, self.buffers, tree), self.shapes)

    def probes(self, probes: torch.Tensor) -> torch.Tensor:
        """The same probes [q, P] for every network -> z^T H_k z, [k, q]."""
        tree = _unflatten(probes, self.shapes)
        products = _flatten(self.per_probe(self.parameters, self.buffers, tree), self.shapes)
        return (products * probes.unsqueeze(0)).sum(dim=-1)


def power_iteration(products: HessianProducts, start: torch.Tensor, count_: int, iterations: int) -> torch.Tensor:
    """Rayleigh quotient of the last normalized iterate, [k] (float64)."""
    vector = (start / start.norm()).expand(count_, -1).contiguous()
    value = torch.zeros(count_, dtype=torch.float64, device=start.device)
    for _ in range(iterations):
        product = products(vector)
        value = (vector.double() * product.double()).sum(dim=1)
        norm = product.norm(dim=1, keepdim=True)
        vector = product / norm.clamp_min(torch.finfo(product.dtype).tiny)
    return value


def _per_chunk(data: MetricInput, compute) -> torch.Tensor:
    values = []
    with eval_mode(data.module):
        for start, stop in chunks(count(data.parameters), MODELS_PER_CALL):
            products = HessianProducts(
                data.module, chunk(data.parameters, start, stop), chunk(data.buffers, start, stop), data.x_train, data.y_train
            )
            values.append(compute(products, stop - start))
    return torch.cat(values)


def sharpness(data: MetricInput) -> torch.Tensor:
    """Top eigenvalue of the training loss's Hessian by power iteration: [K]."""
    start = start_vector(data.module).to(data.x_train.device)
    return _per_chunk(data, lambda products, k: power_iteration(products, start, k, POWER_ITERATIONS))


def hessian_trace(data: MetricInput) -> torch.Tensor:
    """Hutchinson estimate of the trace of the training loss's Hessian: [K]."""
    probes = rademacher_probes(data.module).to(data.x_train.device)

    def estimate(products: HessianProducts, k: int) -> torch.Tensor:
        quadratic = [products.probes(probes[i : i + PROBES_PER_CALL]) for i in range(0, len(probes), PROBES_PER_CALL)]
        return torch.cat(quadratic, dim=1).double().mean(dim=1)

    return _per_chunk(data, estimate)
