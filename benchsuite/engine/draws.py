"""Guess & Check's candidates: a draw's parameters as a pure function of (seed, draw index).

Draw d's parameters are a pure function of (seed, d) (benchsuite.engine.random: Philox keyed by the
seed, counter = d * B + b for the draw's blocks b < B), identical on CPU and CUDA (on the CPU
through the compiled kernel of native.py where it builds, numpy's Philox otherwise: the same
numbers). Candidate c is draw c // 2, with the two rows of its output layer swapped when c is odd.
With ``output_swap`` on, both candidates of every draw are decided; with it off only the even
ones are tried. Either way a network is regenerated from (seed, found_at) alone
(`regenerate`), and results do not depend on chunk size. `candidates_tried` is the number of
candidates decided, in candidate order, up to and including the last accepted one (or the whole
budget when it runs out): exactly what a one-at-a-time sampler would have counted.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from benchsuite.batchnorm import calibrate_batchnorm, has_batchnorm
from benchsuite.engine import native, triton_rng
from benchsuite.engine import random as rng
from benchsuite.engine.layout import Layout, build_layout, materialize
from benchsuite.engine.threads import torch_single_threaded
from benchsuite.records import PriorSpec
from benchsuite.stacked import StackedForward

CPU_PIECE_BYTES = 1 << 20  # random words generated and converted at a time (stays in L2)


def convert_cpu(
    words: np.ndarray, layout: Layout, out: dict[str, torch.Tensor], rows: slice
) -> None:
    """uint64 words [b, W] -> the float parameters of rows `rows` of `out` (random.py's mapping).

    In place on `words`: each int32 half s becomes the odd integer (s >> 7) | 1; a uniform entry is
    then one float32 multiply (exact int32 -> float32 conversion, one rounding of the product).
    """
    t = words.view(np.int32)  # little-endian: low half first, as random.py specifies
    np.right_shift(t, 7, out=t)
    np.bitwise_or(t, 1, out=t)
    for e in layout.entries:
        if e.name not in out:
            continue
        dest = out[e.name][rows].reshape(t.shape[0], -1)
        if e.kind == "zero":
            dest.zero_()
            continue
        src = t[:, e.offset : e.offset + e.count]
        if e.kind == "uniform":
            np.multiply(
                src,
                np.float32(e.scale * 2.0**-24),
                out=dest.numpy(),
                dtype=np.float32,
                casting="unsafe",
            )
            if e.center:
                dest.add_(torch.tensor(e.center, dtype=torch.float32))
        else:
            pairs = torch.from_numpy(t[:, e.offset : e.offset + e.count + (e.count % 2)].copy())
            dest.copy_(rng.normal_from_odd(pairs, e.scale)[:, : e.count])


class NativeDraws:
    """Draws of some of `layout`'s entries through the compiled kernel (engine/native.py): the
    numbers of convert_cpu, bit for bit, written straight into per-entry float32 tensors. Entries
    named in `raw` (uniform, centre 0) get the odd integers t as floats, unscaled. Built once per
    seed and reused for every piece of a range (`create` is None where there is no kernel)."""

    def __init__(self, lib, layout: Layout, seed: int, names, raw: frozenset[str] = frozenset()):
        self.zero, self.center, self.normal, self.order = [], {}, {}, []
        segments = []
        for e in sorted((e for e in layout.entries if e.name in names), key=lambda e: e.offset):
            if e.kind == "zero":
                self.zero.append(e.name)
            elif e.kind == "uniform":
                unit = e.name in raw and e.center == 0.0
                segments.append((e.offset, e.count, 1.0 if unit else e.scale * 2.0**-24))
                self.order.append(e.name)
                if e.center and not unit:
                    self.center[e.name] = torch.tensor(e.center, dtype=torch.float32)
            else:  # normal: the pairs of odd integers, then Box-Muller as convert_cpu
                segments.append((e.offset, e.count + e.count % 2, 1.0))
                self.order.append(e.name)
                self.normal[e.name] = e
        self.filler = native.Filler(lib, seed, layout.words // 4, segments)

    @classmethod
    def create(cls, layout: Layout, seed: int, names, raw=frozenset()) -> NativeDraws | None:
        lib = native.library()
        return None if lib is None else cls(lib, layout, seed, names, raw)

    def __call__(self, first_draw: int, out: dict[str, torch.Tensor]) -> bool:
        """Fill `out` (name -> [draws, *shape]) with draws first_draw, ...; False, with nothing
        written, where the kernel cannot take a destination or the counter (native.Filler)."""
        if not out:
            return True
        draws = len(next(iter(out.values())))
        pairs = {
            name: torch.empty((draws, e.count + e.count % 2), dtype=torch.float32)
            for name, e in self.normal.items()
        }
        try:
            self.filler(first_draw, [pairs.get(name, out[name]) for name in self.order])
        except ValueError:  # checked before anything is written
            return False
        for name in self.zero:
            out[name].zero_()
        for name, center in self.center.items():
            out[name].add_(center)
        for name, e in self.normal.items():
            z = rng.normal_from_odd(pairs[name].to(torch.int32), e.scale)[:, : e.count]
            out[name].copy_(z.reshape(out[name].shape))
        return True


def _convert_torch(words: torch.Tensor, layout: Layout, out: dict[str, torch.Tensor]) -> None:
    odd = rng.odd_integers(words)
    values = materialize(layout, odd, names=set(out))
    for name, value in values.items():
        out[name].copy_(value)


def empty_parameters(layout: Layout, draws: int, device, names=None) -> dict[str, torch.Tensor]:
    return {
        e.name: torch.empty((draws, *e.shape), dtype=torch.float32, device=device)
        for e in layout.entries
        if names is None or e.name in names
    }


def generate_range(
    layout: Layout,
    seed: int,
    first_draw: int,
    draws: int,
    out: dict[str, torch.Tensor],
    rows: slice | None = None,
) -> None:
    """Fill rows of `out` (per-parameter float32 [.., *shape]) with draws first_draw, ...."""
    rows = rows if rows is not None else slice(0, draws)
    device = next(iter(out.values())).device
    if device.type == "cpu":
        fast = NativeDraws.create(layout, seed, set(out))
        if fast is not None and fast(first_draw, {name: t[rows] for name, t in out.items()}):
            return
        # one Philox object for the range, consumed a few draws at a time: each piece is
        # converted while it is still in cache, and small pieces avoid page-faulting fresh memory
        bit_generator = rng.numpy_stream(seed, first_draw, layout.words)
        piece = max(1, CPU_PIECE_BYTES // (8 * layout.words))
        first = rows.start or 0
        for a in range(0, draws, piece):
            b = min(draws, a + piece)
            words = bit_generator.random_raw((b - a) * layout.words).reshape(b - a, layout.words)
            convert_cpu(words, layout, out, slice(first + a, first + b))
    else:
        indices = torch.arange(first_draw, first_draw + draws, device=device, dtype=torch.int64)
        words = rng.torch_words(seed, indices, layout.words)
        _convert_torch(words, layout, {k: v[rows] for k, v in out.items()})


def generate(
    layout: Layout, seed: int, first_draw: int, draws: int, device: torch.device, names=None
) -> dict[str, torch.Tensor]:
    """Stacked parameters [draws, *shape] of draws first_draw, ... (only `names` if given).

    On CUDA with Triton, one fused kernel writes all numbers of the chunk ([draws, numbers],
    draw-major) and each parameter is a strided view into it; uniform scales other than 1 are one
    in-place multiply (exact: t * 2**-24 is exact, so one rounding as on CPU).
    """
    if device.type == "cuda" and triton_rng.available(device):
        flat = triton_rng.uniform_rows(seed, first_draw, draws, layout.words, device)
        out = {}
        for e in layout.entries:
            if names is not None and e.name not in names:
                continue
            if e.kind == "zero":
                out[e.name] = torch.zeros((draws, *e.shape), device=device)
                continue
            if e.kind == "normal":  # Box-Muller on the exact odd integers t = v * 2**24
                t = (flat[:, e.offset : e.offset + e.count + e.count % 2] * 2.0**24).to(torch.int32)
                out[e.name] = rng.normal_from_odd(t, e.scale)[:, : e.count].reshape(draws, *e.shape)
                continue
            view = flat[:, e.offset : e.offset + e.count].unflatten(1, e.shape)
            if e.scale != 1.0:
                view.mul_(torch.tensor(e.scale, dtype=torch.float32, device=device))
            if e.center:
                view.add_(torch.tensor(e.center, dtype=torch.float32, device=device))
            out[e.name] = view
        return out
    out = empty_parameters(layout, draws, device, names)
    generate_range(layout, seed, first_draw, draws, out)
    return out


def draw_parameters(
    layout: Layout, seed: int, draws, device: torch.device, names=None
) -> dict[str, torch.Tensor]:
    """Stacked parameters of the given draw indices (unswapped), in the given order."""
    draws = torch.as_tensor(list(draws) if isinstance(draws, range) else draws, dtype=torch.int64)
    draws = draws.flatten()
    device = torch.device(device)
    out = empty_parameters(layout, draws.numel(), device, names)
    if device.type == "cpu":
        for row, d in enumerate(draws.tolist()):
            generate_range(layout, seed, d, 1, out, slice(row, row + 1))
    else:
        words = rng.torch_words(seed, draws.to(device), layout.words)
        _convert_torch(words, layout, out)
    return out


def output_parameter(module: nn.Module) -> str | None:
    """Name of the weight whose two rows produce the two logits (last 2-row weight), if any."""
    name = None
    for n, p in module.named_parameters():
        if p.dim() >= 2 and p.shape[0] == 2:
            name = n
    return name


def swap_rows(parameters: dict[str, torch.Tensor], name: str, which: torch.Tensor) -> None:
    """In place: exchange rows 0 and 1 of parameters[name] for the networks where `which`."""
    if not bool(which.any()):
        return
    weight = parameters[name]
    weight[which] = weight[which].flip(1)


@torch.no_grad()
def swap_is_exact(module: nn.Module, name: str, layout: Layout, x: torch.Tensor) -> bool:
    """Run-time check of step (2) of the proof: swapping the rows swaps the two logits."""
    template = copy.deepcopy(module).eval()
    device = x.device
    params = draw_parameters(layout, 12345, range(2), device)
    buffers = {k: v.unsqueeze(0).expand(2, *v.shape).clone() for k, v in template.named_buffers()}
    forward = StackedForward(template)
    logits = forward(params, buffers, x[:4])
    swapped = {k: v.clone() for k, v in params.items()}
    swap_rows(swapped, name, torch.ones(2, dtype=torch.bool, device=device))
    other = forward(swapped, buffers, x[:4])
    return bool(torch.equal(logits.flip(-1), other)) and logits.shape[-1] == 2


def regenerate(
    module: nn.Module,
    prior: PriorSpec,
    seed: int,
    indices,
    device: torch.device | str = "cpu",
    x_train: torch.Tensor | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Stacked (parameters, buffers) of candidates `indices` of stream `seed` (found_at values).

    Candidate c is draw c // 2, with the output rows swapped when c is odd. For modules with
    BatchNorm, pass x_train: buffers then hold the training-set statistics (calibrate_batchnorm).
    """
    device = torch.device(device)
    with torch_single_threaded(device):
        return _regenerate(module, prior, seed, indices, device, x_train)


def _regenerate(module, prior, seed, indices, device, x_train):
    indices = torch.as_tensor(indices, dtype=torch.int64).flatten()
    layout = build_layout(module, prior)
    k = indices.numel()
    if k:
        params = draw_parameters(layout, seed, indices // 2, device)
        name = output_parameter(module)
        odd = (indices % 2 == 1).to(device)
        if bool(odd.any()):
            if name is None:
                raise ValueError("odd candidate indices need a module with a 2-row output layer")
            swap_rows(params, name, odd)
    else:
        params = {
            n: torch.empty((0, *p.shape), device=device) for n, p in module.named_parameters()
        }
    buffers = {
        n: b.detach().to(device).unsqueeze(0).expand(k, *b.shape).clone()
        for n, b in module.named_buffers()
    }
    if x_train is not None and has_batchnorm(module) and k:
        buffers = calibrate_batchnorm(module.to(device), params, buffers, x_train.to(device))
    return params, buffers


