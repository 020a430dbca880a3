"""How one round of stacked training is split into sub-stacks for engine/threads.py's workers.

Why two rules: on the "mlp" path every kernel computes each network by itself (bmm, elementwise
optimizers), so any split gives the same bits and the round goes one sub-stack per worker, or
whole on one thread where that was faster (`SplitChoice`: each sub-stack pays the step's Python,
which the GIL serializes). On the
"vmap" path convolutions run grouped over the stack, and oneDNN picks its algorithm by the group
count: a LeNet trained alone (1 group) or in 2-3 of 3-channel layers gets other bits than in a
stack of 8 (measured, torch 2.14). So that split depends on the round and the network alone,
never on the worker count: parts of at least 16 networks, a power of two of them (even work for
1, 2, 4, ... workers), which measured bit-identical to the whole round for the built-in LeNets
and ResNet4 (tests/test_training.py); a round under 32 networks stays whole. The hand-written
"conv" path (stacked_conv.py) splits the same way: its patches formulation computes each network
by itself (any split would do), its grouped one is vmap's and needs this rule.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from torch import nn

VMAP_PART_BYTES = 2 * 2**20  # parameters of one vmap sub-stack: 16 networks of LeNet w=1
VMAP_PART_NETWORKS = (16, 32)  # bounds: fewer cost per-step overhead, more gained nothing
CONV_PART_NETWORKS = (16, 32)  # the same for the hand-written "conv" path (stacked_conv.py)


def bounds(total: int, parts: int) -> list[tuple[int, int]]:
    """`parts` contiguous ranges covering 0..total, sizes differing by at most one."""
    edges = np.linspace(0, total, max(1, min(parts, total)) + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in itertools.pairwise(edges) if b > a]


def vmap_parts(module: nn.Module, count: int) -> int:
    """Sub-stacks of a vmap round of `count` networks (a function of the round alone)."""
    parameter_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
    low, high = VMAP_PART_NETWORKS
    size = max(low, min(high, VMAP_PART_BYTES // max(1, parameter_bytes)))
    parts = max(1, count // size)
    return 1 << (parts.bit_length() - 1)


def conv_parts(module: nn.Module, count: int) -> int:
    """Sub-stacks of a "conv" round of `count` networks (a function of the round alone)."""
    low, high = CONV_PART_NETWORKS
    size = max(low, min(high, VMAP_PART_BYTES // max(1, _parameter_bytes(module))))
    parts = max(1, count // size)
    return 1 << (parts.bit_length() - 1)


def _parameter_bytes(module: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def round_parts(path: str, module: nn.Module, count: int, workers: int) -> list[tuple[int, int]]:
    """The (start, stop) sub-stacks of a round on `path` with `workers` CPU workers."""
    if count == 0:
        return [(0, 0)]
    if path == "mlp":
        return bounds(count, workers)
    if path == "conv":
        return bounds(count, conv_parts(module, count))
    return bounds(count, vmap_parts(module, count))


class SplitChoice:
    """Whether "mlp" rounds train split over the workers or as one stack on one thread.

    Both give the same bits, so speed alone decides, and it depends on the load: a sub-stack per
    worker pays each step's Python again (held under the GIL), which pays off only when the other
    workers get a core (measured on the shared 2-core machine, paper MLP w=1, 51 networks: split
    0.8-0.9x one stack at load ~5, 4x under a busy loop per core against the earlier intra-op
    threads). Per process and network shape: the first round split, the next whole, then the
    faster per network-step, and every CHECK-th round the other way again, as the load changes.
    """

    CHECK = 8

    def __init__(self):
        self.seconds: dict[tuple, float] = {}  # (key, split) -> s per network-step, latest round
        self.rounds: dict[tuple, int] = {}

    def split(self, key: tuple) -> bool:
        done = self.rounds.get(key, 0)
        self.rounds[key] = done + 1
        split, whole = self.seconds.get((key, True)), self.seconds.get((key, False))
        if split is None or whole is None:
            return split is None
        faster = split <= whole
        return faster != (done % self.CHECK == 0)

    def record(self, key: tuple, split: bool, seconds: float, network_steps: int) -> None:
        self.seconds[(key, split)] = seconds / max(1, network_steps)


CHOICE = SplitChoice()


def joined(results: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The sub-stacks' tensors back in one stack, in order."""
    if len(results) == 1:
        return results[0]
    return {name: torch.cat([r[name] for r in results]) for name in results[0]}
