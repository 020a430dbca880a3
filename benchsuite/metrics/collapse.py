"""Stochastic collapse (Chen et al. 2023): hidden neurons that vanish or duplicate one another.

SGD's noise draws networks toward simpler subnetworks: neurons whose incoming and outgoing
weights shrink to zero (vanishing), and neurons whose incoming weights become parallel, so that
they compute proportional activations and could be merged into one (redundant). Both are counted
over the hidden neurons of a network (the output units of every weight layer but the last; a
convolution's neuron is a channel) and reported as shares of them, pooled over the hidden layers.

- incoming vector of neuron j: its row of the layer's weight (a filter for a convolution) with its
  bias appended when the layer has one; outgoing vector: its column of the next layer's weight
  (for a convolution followed by flatten and a linear layer, the block of columns of its channel).
- vanishing: ||in_j|| <= VANISHING_THRESHOLD * max_i ||in_i|| and ||out_j|| <= VANISHING_THRESHOLD
  * max_i ||out_i||, both relative to the largest neuron of the same layer of the same network, so
  that neither the prior's scale nor a layer's rescaling moves the count.
- redundant: two non-vanishing neurons of a layer are parallel when the cosine of their incoming
  vectors is >= PARALLEL_COSINE (same direction: under ReLU a negative multiple is a different
  function); clusters are the connected components of that relation, and a cluster of c neurons
  counts c - 1 redundant neurons (what merging would remove).

Defined for chains of Linear and Conv2d layers (ungrouped) with only ReLU, max or average pooling,
Flatten, Identity and Dropout between them, nested in nn.Sequential: there the next weight layer
is the only reader of a neuron, and ReLU and pooling commute with positive scaling. Anything else
(BatchNorm rescales a vanished filter, residual connections add other readers) gives NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from benchsuite.metrics.common import count, device_of
from benchsuite.records import MetricInput

VANISHING_THRESHOLD = 0.05
PARALLEL_COSINE = 0.99
BETWEEN_LAYERS = (nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.Flatten, nn.Identity, nn.Dropout)


def weight_layers(module: nn.Module) -> list[tuple[str, str | None]] | None:
    """(weight name, bias name or None) of each layer of a supported chain, in order; None when
    the module is not such a chain."""
    layers = []
    for name, sub in module.named_modules():
        if any(True for _ in sub.children()):
            if not isinstance(sub, nn.Sequential):
                return None
            continue
        prefix = f"{name}." if name else ""
        if isinstance(sub, nn.Linear) or (isinstance(sub, nn.Conv2d) and sub.groups == 1):
            layers.append((f"{prefix}weight", f"{prefix}bias" if sub.bias is not None else None))
        elif not isinstance(sub, BETWEEN_LAYERS):
            return None
    return layers


def _incoming(parameters, weight: str, bias: str | None) -> torch.Tensor:
    """[K, n, fan_in (+1)]: each neuron's incoming weights, its bias appended."""
    vectors = parameters[weight].detach().double().flatten(2)
    if bias is not None:
        vectors = torch.cat([vectors, parameters[bias].detach().double().unsqueeze(-1)], dim=-1)
    return vectors


def _outgoing(parameters, next_weight: str, neurons: int) -> torch.Tensor | None:
    """[K, n, ...]: each neuron's outgoing weights in the next layer; None if they do not fit."""
    weight = parameters[next_weight].detach().double()
    k, readers, inputs = weight.shape[0], weight.shape[1], weight.shape[2]
    if weight.dim() == 5:  # a convolution reads channels
        return weight.transpose(1, 2).flatten(2) if inputs == neurons else None
    if inputs == neurons:
        return weight.transpose(1, 2)
    if inputs % neurons == 0:  # flattened channels: channel-major blocks of columns
        return weight.view(k, readers, neurons, inputs // neurons).transpose(1, 2).flatten(2)
    return None


def hidden_neurons(module: nn.Module, parameters: Mapping[str, torch.Tensor]):
    """[(incoming [K, n, a], outgoing [K, n, b])] per hidden layer; None when not defined."""
    layers = weight_layers(module)
    if not layers or len(layers) < 2:
        return None
    pairs = []
    for (weight, bias), (next_weight, _) in zip(layers, layers[1:]):
        incoming = _incoming(parameters, weight, bias)
        outgoing = _outgoing(parameters, next_weight, incoming.shape[1])
        if outgoing is None:
            return None
        pairs.append((incoming, outgoing))
    return pairs


def vanishing_mask(incoming: torch.Tensor, outgoing: torch.Tensor) -> torch.Tensor:
    """[K, n]: both weight vectors at most VANISHING_THRESHOLD of the layer's largest."""
    inward, outward = incoming.norm(dim=2), outgoing.norm(dim=2)
    small_in = inward <= VANISHING_THRESHOLD * inward.amax(dim=1, keepdim=True)
    small_out = outward <= VANISHING_THRESHOLD * outward.amax(dim=1, keepdim=True)
    return small_in & small_out


def redundant_counts(incoming: torch.Tensor, vanishing: torch.Tensor) -> torch.Tensor:
    """[K]: neurons that merging parallel clusters would remove (sum over clusters of size - 1)."""
    norms = incoming.norm(dim=2)
    valid = ~vanishing & (norms > 0)
    unit = incoming / norms.clamp_min(torch.finfo(incoming.dtype).tiny).unsqueeze(-1)
    parallel = (unit @ unit.transpose(1, 2)) >= PARALLEL_COSINE
    parallel &= valid.unsqueeze(1) & valid.unsqueeze(2)
    parallel |= torch.diag_embed(valid)  # each valid neuron reaches itself
    reach = parallel.double()
    for _ in range(max(1, math.ceil(math.log2(max(incoming.shape[1], 2))))):
        reach = ((reach @ reach) > 0).double()  # paths of twice the length
    sizes = reach.sum(dim=2)
    clusters = torch.where(valid, 1.0 / sizes.clamp_min(1), torch.zeros_like(sizes)).sum(dim=1)
    return valid.sum(dim=1).double() - clusters.round()


def _share(data: MetricInput, counted) -> torch.Tensor:
    pairs = hidden_neurons(data.module, data.parameters)
    if pairs is None:
        return torch.full((count(data.parameters),), torch.nan, dtype=torch.float64, device=device_of(data.parameters))
    found = sum(counted(incoming, outgoing) for incoming, outgoing in pairs)
    return found / sum(incoming.shape[1] for incoming, _ in pairs)


def vanishing_neurons(data: MetricInput) -> torch.Tensor:
    """Share of hidden neurons whose incoming and outgoing weights both vanish: [K]."""
    return _share(data, lambda i, o: vanishing_mask(i, o).sum(dim=1).double())


def redundant_neurons(data: MetricInput) -> torch.Tensor:
    """Share of hidden neurons that duplicate another of their layer (parallel incoming): [K]."""
    return _share(data, lambda i, o: redundant_counts(i, vanishing_mask(i, o)))
