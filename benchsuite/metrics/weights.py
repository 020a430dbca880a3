"""Metrics of the weights alone (no data): norms, distance from initialization, effective rank.

They are the cheap part of the diagnostics panel: batched reductions and one batched SVD per
layer, no forward pass. Conventions:

- parameter norm: the Euclidean norm of all of a network's parameters together (weights, biases,
  BatchNorm affine parameters).
- layer norms: the Frobenius norm of each weight tensor (parameters with two or more dimensions,
  in the module's order); the panel reports the first (input) and the last (output) layer, and
  `layer_norms` gives every layer, [K, L], to a notebook.
- distance from initialization: ||theta - theta_0||_2 over all parameters, for gradient methods
  (MetricInput.initial_parameters); NaN for random interpolators, which have no initialization.
- effective rank (Roy & Vetterli 2007): for a weight matrix (a convolution's [out, in * kh * kw]),
  with p_i = s_i / sum_j s_j over its singular values, erank = exp(-sum_i p_i log p_i); it is 1
  for rank one and min(out, in) when all singular values are equal. Per network, the mean over the
  hidden layers (every weight tensor but the last, the 2-logit readout whose rank is at most 2) of
  erank / min(out, in): 1 is full rank, 1/min(out, in) rank one.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from benchsuite.metrics.common import count, device_of, weight_names
from benchsuite.records import MetricInput


def _sum_of_squares(tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
    return sum(t.detach().double().flatten(1).square().sum(dim=1) for t in tensors.values())


def param_norm(data: MetricInput) -> torch.Tensor:
    """||theta||_2 over every parameter of each network: [K]."""
    return _sum_of_squares(data.parameters).sqrt()


def layer_norms(module: nn.Module, parameters: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Frobenius norm of each weight tensor, per network: [K, L] (float64)."""
    names = weight_names(module)
    if not names:
        return torch.empty(count(parameters), 0, dtype=torch.float64, device=device_of(parameters))
    return torch.stack([parameters[n].detach().double().flatten(1).norm(dim=1) for n in names], dim=1)


def weight_norm_input(data: MetricInput) -> torch.Tensor:
    """||W_1||_F, the first weight tensor (the layer that sees the image): [K]."""
    return _layer(layer_norms(data.module, data.parameters), 0)


def weight_norm_output(data: MetricInput) -> torch.Tensor:
    """||W_L||_F, the last weight tensor (the readout to the two logits): [K]."""
    return _layer(layer_norms(data.module, data.parameters), -1)


def _layer(norms: torch.Tensor, index: int) -> torch.Tensor:
    if norms.shape[1] == 0:
        return torch.full((norms.shape[0],), torch.nan, dtype=torch.float64, device=norms.device)
    return norms[:, index]


def init_distance(data: MetricInput) -> torch.Tensor:
    """||theta - theta_0||_2 over every parameter: [K]; NaN without initial parameters."""
    initial = data.initial_parameters
    if initial is None:
        return torch.full((count(data.parameters),), torch.nan, dtype=torch.float64, device=device_of(data.parameters))
    differences = {n: data.parameters[n].detach().double() - initial[n].to(data.parameters[n].device).double() for n in data.parameters}
    return _sum_of_squares(differences).sqrt()


def effective_ranks(module: nn.Module, parameters: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """erank / min(out, in) of every weight matrix, per network: [K, L] (float64).

    A zero matrix has no spectrum to spread: NaN."""
    columns = []
    for name in weight_names(module):
        matrix = parameters[name].detach().double().flatten(2)  # [K, out, in * kh * kw]
        singular = torch.linalg.svdvals(matrix)  # [K, min(out, in)]
        total = singular.sum(dim=1, keepdim=True)
        p = singular / total.clamp_min(torch.finfo(torch.float64).tiny)
        entropy = -torch.where(p > 0, p * p.log(), torch.zeros_like(p)).sum(dim=1)
        erank = entropy.exp() / singular.shape[1]
        columns.append(torch.where(total.squeeze(1) > 0, erank, torch.nan))
    if not columns:
        return torch.empty(count(parameters), 0, dtype=torch.float64, device=device_of(parameters))
    return torch.stack(columns, dim=1)


def effective_rank(data: MetricInput) -> torch.Tensor:
    """Mean over the hidden layers (all weight tensors but the last) of erank / min(out, in): [K].

    A network whose only weight tensor is its readout has no hidden layer: NaN."""
    ranks = effective_ranks(data.module, data.parameters)
    if ranks.shape[1] < 2:
        return torch.full((ranks.shape[0],), torch.nan, dtype=torch.float64, device=ranks.device)
    return ranks[:, :-1].mean(dim=1)
