"""Where each number of a draw's random stream goes: the flat layout of one candidate's parameters.

Order is module.named_parameters() (as in benchsuite.stacked.draw_parameters_). Weights come from
the prior, BatchNorm affine parameters from protocol.md's ranges, biases are zero and consume no
random numbers. Every parameter starts at an even stream offset so that Box-Muller pairs never
straddle two parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from benchsuite.engine import random as rng
from benchsuite.records import PriorSpec
from benchsuite.stacked import BATCHNORM_BIAS_RANGE, BATCHNORM_WEIGHT_RANGE, fan_in


@dataclass(frozen=True)
class Entry:
    name: str
    shape: tuple[int, ...]
    kind: str  # "uniform", "normal" or "zero"
    center: float
    scale: float  # half-width (uniform) or std (normal)
    offset: int  # first stream number (meaningless for "zero")
    count: int

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


@dataclass(frozen=True)
class Layout:
    entries: tuple[Entry, ...]
    numbers: int  # stream numbers one draw consumes

    @property
    def words(self) -> int:
        return rng.words_per_draw(self.numbers)

    def entry(self, name: str) -> Entry:
        for e in self.entries:
            if e.name == name:
                return e
        raise KeyError(name)


def build_layout(module: nn.Module, prior: PriorSpec) -> Layout:
    owners = {
        f"{prefix}.{name}" if prefix else name: type(owner)
        for prefix, owner in module.named_modules()
        for name, _ in owner.named_parameters(recurse=False)
    }
    entries = []
    offset = 0
    for name, param in module.named_parameters():
        shape = tuple(param.shape)
        numel = param.numel()
        if issubclass(owners[name], nn.modules.batchnorm._BatchNorm):
            low, high = BATCHNORM_WEIGHT_RANGE if name.endswith("weight") else BATCHNORM_BIAS_RANGE
            entry = Entry(name, shape, "uniform", (low + high) / 2, (high - low) / 2, offset, numel)
        elif name.endswith("bias") or param.dim() < 2:
            entry = Entry(name, shape, "zero", 0.0, 0.0, offset, 0)
        else:
            scale = float(prior.scale(fan_in(param)))
            kind = "uniform" if prior.family == "uniform" else "normal"
            entry = Entry(name, shape, kind, 0.0, scale, offset, numel)
        entries.append(entry)
        offset += entry.count + (entry.count % 2)
    return Layout(tuple(entries), offset)


def materialize(
    layout: Layout, odd: torch.Tensor, names: set[str] | None = None
) -> dict[str, torch.Tensor]:
    """Stacked float32 parameters [D, *shape] from odd integers [D, layout.numbers] (random.py)."""
    draws = odd.shape[0]
    out = {}
    for e in layout.entries:
        if names is not None and e.name not in names:
            continue
        if e.kind == "zero":
            out[e.name] = torch.zeros((draws, *e.shape), dtype=torch.float32, device=odd.device)
            continue
        t = odd[:, e.offset : e.offset + e.count + (e.count % 2)]
        if e.kind == "uniform":
            value = t.to(torch.float32) * torch.tensor(e.scale * 2.0**-24, dtype=torch.float32)
            if e.center:
                value = value + torch.tensor(e.center, dtype=torch.float32)
        else:
            value = rng.normal_from_odd(t, e.scale)
        out[e.name] = value[:, : e.count].reshape(draws, *e.shape)
    return out
