"""Many plain Sequentials evaluated side by side ("wide"), with the numbers of StackedForward.

Why: benchsuite.stacked.StackedForward (vmap of functional_call) is the semantics of evaluation,
but on LeNet it spends its time in vmap's layout copies, in max_pool2d_with_indices and in page
faults of activations of 4,096 images x 256 networks (several GB). Here a sub-chunk of G networks
keeps convolutional activations as [b, G*C, H, W] (network g owns channels g*C..g*C+C-1) and
flat ones as [G, b, F], works on blocks of images small enough for the caches, computes the
first layer's shared input once per block (im2col patches, or the prefix's features) and reuses
preallocated buffers.

The numbers are those of StackedForward, step by step. vmap's batching rules (traced in torch
2.14) run: the parameter-free prefix once on the shared images; a Conv2d as one convolution
without bias (groups = networks once the input is per network), then + bias; a Linear as
bmm(x [K, b, in], W^T) (x expanded when shared), then + bias. This module runs the same products
except where a faster formulation gives the same bits:
- a first Conv2d as patches (kh, kw, c order) times the stacked kernels (oneDNN's direct
  convolution sums in that order), and when a tiling max-pool follows, as the maximum of one
  such product per window position ("pooled": the 2x2 pool's input is never written); a first
  Linear as one mm against all networks' rows;
- a per-network Conv2d with one input channel as one depthwise convolution per output channel;
- G networks per convolution instead of the old call's K (oneDNN may pick another algorithm for
  another group count: it does for 2 groups of 3 channels);
- blocks of images: every kernel here computes each image by itself, and MKL's GEMM gives each
  row the same bits whatever the row count from 16 rows on (measured on every layer shape of the
  built-in networks; 15 rows or fewer take other kernels), when ATen calls it at all (a bmm of
  fewer than 400 multiply-adds per matrix loops naively instead): image chunks are split only
  into blocks of at least 128 rows, and chunks of fewer than `min_rows` (>= 32) images go
  through StackedForward (engine/evaluation.py).
None of this is a documented guarantee of MKL or oneDNN, so each formulation is compared with the
old call once per layer shape on random numbers, bit for bit (`agrees`); a layer that differs
falls back, down to the old call itself. What needs no check: max and ReLU commute exactly, so
a ReLU before a tiling pool runs on the pooled, four times smaller tensor, and x -> fl(x + c) is
monotone, so the pooled first layer adds its bias after the maximum.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

WEIGHTED = (nn.Linear, nn.Conv2d)
LATER = (nn.ReLU, nn.MaxPool2d, nn.Flatten, nn.Identity)
PREFIX = (nn.MaxPool2d, nn.AvgPool2d, nn.Flatten, nn.Identity)  # parameter-free, run once
GEMM_ROWS = 32  # MKL: a row's result does not depend on the row count from 16 rows on (measured)
NAIVE_PRODUCT = 400  # ATen's CPU bmm loops naively below this many multiply-adds per matrix


@dataclass(frozen=True)
class Step:
    kind: str  # "conv", "linear", "relu", "pool", "flatten"
    layer: nn.Module
    weight: str | None
    bias: str | None
    shape_in: tuple[int, ...]  # one network's input for one image
    shape_out: tuple[int, ...]

    @property
    def signature(self) -> tuple:
        """What the arithmetic of a weighted step depends on (the key of `agrees`)."""
        layer = self.layer
        if self.kind != "conv":
            return (self.kind, self.shape_in, self.shape_out)
        return (
            self.kind, self.shape_in, self.shape_out, tuple(layer.kernel_size),
            tuple(layer.stride), tuple(layer.padding), tuple(layer.dilation),
        )  # fmt: skip


def _layers(module: nn.Module) -> list[nn.Module] | None:
    if type(module) is nn.Sequential:
        found = []
        for child in module:
            inner = _layers(child)
            if inner is None:
                return None
            found += inner
        return found
    return [module] if type(module) in WEIGHTED + LATER + PREFIX else None


def _conv_ok(layer: nn.Conv2d) -> bool:
    return layer.groups == 1 and layer.padding_mode == "zeros" and isinstance(layer.padding, tuple)


def _pool_ok(layer: nn.MaxPool2d) -> bool:
    return not layer.return_indices


class WidePlan:
    """A module this path can evaluate: the shared prefix, then Steps. Build with `of`."""

    def __init__(self, module: nn.Module, sample_shape: tuple[int, ...]):
        layers = _layers(module)
        if layers is None:
            raise TypeError("not a plain Sequential of Linear/Conv2d/ReLU/MaxPool2d/Flatten")
        first = next((i for i, layer in enumerate(layers) if type(layer) in WEIGHTED), None)
        if first is None or any(type(layer) is nn.AvgPool2d for layer in layers[first:]):
            raise TypeError("no weight layer, or a pooling this path does not run")
        names = {id(m): name for name, m in module.named_modules()}
        self.prefix = nn.Sequential(*layers[:first])
        shape = tuple(self.prefix(torch.empty(1, *sample_shape, device="meta")).shape[1:])
        self.features_shape = shape
        self.steps: list[Step] = []
        for layer in layers[first:]:
            kind = {
                nn.Conv2d: "conv", nn.Linear: "linear", nn.ReLU: "relu", nn.MaxPool2d: "pool",
                nn.Flatten: "flatten", nn.Identity: None,
            }[type(layer)]  # fmt: skip
            if kind is None:
                continue
            rank = 3 if kind in ("conv", "pool") else 1 if kind == "linear" else None
            if rank is not None and len(shape) != rank:
                raise TypeError(f"{type(layer).__name__} on per-image shape {shape}")
            if (kind == "conv" and not _conv_ok(layer)) or (kind == "pool" and not _pool_ok(layer)):
                raise TypeError(f"unsupported {layer}")
            if kind == "flatten" and (layer.start_dim, layer.end_dim) != (1, -1):
                raise TypeError("only Flatten() of everything but the batch")
            weighted = kind in ("conv", "linear")
            # the output shape from a copy on the meta device: the layer itself, with its
            # parameters on the CPU, fails there once it adds a bias (a device mismatch)
            probe = copy.deepcopy(layer).to("meta") if weighted else layer
            out = tuple(probe(torch.empty(1, *shape, device="meta")).shape[1:])
            bias = f"{names[id(layer)]}.bias" if weighted and layer.bias is not None else None
            weight = f"{names[id(layer)]}.weight" if weighted else None
            self.steps.append(Step(kind, layer, weight, bias, shape, out))
            shape = out
        if len(shape) != 1:
            raise TypeError("the network must end in a flat output")
        # conv steps run on sub-blocks of images, the rest on the whole block
        self.flat_from = next(
            (i for i, s in enumerate(self.steps) if len(s.shape_out) == 1), len(self.steps)
        )
        self.first_pool = self._first_pool()
        self.products = [
            s.shape_in[0] * s.shape_out[0]
            for s in self.steps[self.flat_from :]
            if s.kind == "linear"
        ]
        self.min_rows = max([GEMM_ROWS] + [-(-NAIVE_PRODUCT // p) for p in self.products])

    def _first_pool(self) -> tuple[int, Step, bool] | None:
        """(steps it covers, the pool step, whether a ReLU is among them) when a first Conv2d is
        followed by a tiling max-pool, with at most a ReLU between or after: then the first
        layer can run pooled (`pooled_conv`)."""
        kinds = [s.kind for s in self.steps[:3]]
        if kinds[:1] != ["conv"]:
            return None
        for pattern in (["conv", "relu", "pool"], ["conv", "pool", "relu"], ["conv", "pool"]):
            if kinds[: len(pattern)] == pattern:
                pool = self.steps[pattern.index("pool")]
                if tiling(pool.layer) is not None:
                    return len(pattern), pool, "relu" in pattern
        return None

    @classmethod
    def of(cls, module: nn.Module, sample_shape) -> WidePlan | None:
        try:
            return cls(module, tuple(sample_shape))
        except (TypeError, RuntimeError, ValueError):
            return None

    @property
    def first(self) -> Step:
        return self.steps[0]

    def activation_numbers(self) -> int:
        """The largest activation of one network for one image (sizes the image sub-blocks)."""
        return max(_numel(s.shape_out) for s in self.steps)

    def flat_width(self) -> int:
        """Features per network where the convolutional part ends (its Flatten's output)."""
        return self.steps[self.flat_from].shape_out[0]


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


# ---------------------------------------------------------------------------------------------
# Formulations of the weighted steps, and the check that they give the old call's bits


def _pair(value) -> tuple:
    return (value, value) if isinstance(value, int) else tuple(value)


def tiling(layer: nn.MaxPool2d) -> tuple[int, int] | None:
    """(kh, kw) of a max-pool whose windows tile its input (kernel == stride, no padding,
    dilation 1, floor mode), else None."""
    kernel = _pair(layer.kernel_size)
    stride = _pair(layer.stride if layer.stride is not None else layer.kernel_size)
    plain = _pair(layer.padding) == (0, 0) and _pair(layer.dilation) == (1, 1)
    return kernel if kernel == stride and plain and not layer.ceil_mode else None


def patches(
    x: torch.Tensor, layer: nn.Conv2d, offset=(0, 0), every=(1, 1), size=None
) -> torch.Tensor:
    """im2col of shared images [b, C, H, W]: [b, kh*kw*C, L], columns in (kh, kw, c) order, for
    the output positions offset + every * i (all of them by default; `size`: their count per
    axis). One strided copy: F.unfold was 3-8x slower here."""
    (ph, pw), (kh, kw) = layer.padding, layer.kernel_size
    (dh, dw), (sh, sw) = layer.dilation, layer.stride
    if ph or pw:
        x = F.pad(x, (pw, pw, ph, ph))
    b, c, height, width = x.shape
    if size is None:
        size = ((height - dh * (kh - 1) - 1) // sh + 1, (width - dw * (kw - 1) - 1) // sw + 1)
    sb, sc, sy, sx = x.stride()
    windows = x.as_strided(
        (b, kh, kw, c, *size),
        (sb, sy * dh, sx * dw, sc, sy * sh * every[0], sx * sw * every[1]),
        x.storage_offset() + sy * sh * offset[0] + sx * sw * offset[1],
    )
    return windows.reshape(b, kh * kw * c, size[0] * size[1])


def kernel_rows(weight: torch.Tensor) -> torch.Tensor:
    """Stacked kernels [G, O, C, kh, kw] as [G*O, kh*kw*C], matching `patches`."""
    g, o, c = weight.shape[:3]
    return weight.reshape(g * o, c, -1).transpose(1, 2).reshape(g * o, -1)


def _conv(layer: nn.Conv2d, x, weight, groups):
    return F.conv2d(x, weight, None, layer.stride, layer.padding, layer.dilation, groups)


def first_conv(
    step: Step, how: str, weight, x=None, columns=None, out=None, rows=None
) -> torch.Tensor:
    """[b, G*O, H', W'] of a first Conv2d on shared images (weight [G, O, C, kh, kw]; `rows`:
    kernel_rows(weight) if already made)."""
    g, o = weight.shape[:2]
    if how == "im2col":
        rows = kernel_rows(weight) if rows is None else rows
        product = torch.matmul(rows, columns, out=out)
        return product.view(columns.shape[0], g * o, *step.shape_out[1:])
    return _conv(step.layer, x, weight.reshape(g * o, *weight.shape[2:]), 1)


def pooled_conv(rows, pool: Step, columns, out=None, scratch=None) -> torch.Tensor:
    """[b, G*O, H'', W'']: a first Conv2d followed by its tiling max-pool, as the maximum of one
    product per window position (columns[i]: patches of those output positions). Each product
    is the im2col product's, column by column; max is exact."""
    b = columns[0].shape[0]
    shape = (b, rows.shape[0], columns[0].shape[-1])
    out = torch.matmul(rows, columns[0], out=out if out is not None else rows.new_empty(shape))
    for part in columns[1:]:
        scratch = torch.matmul(rows, part, out=scratch)
        torch.maximum(out, scratch, out=out)
    return out.view(b, rows.shape[0], *pool.shape_out[1:])


def window_columns(x, step: Step, pool: Step) -> list[torch.Tensor]:
    """Patches of a first Conv2d at each position of its tiling max-pool's windows."""
    kh, kw = tiling(pool.layer)
    size = tuple(pool.shape_out[1:])
    return [patches(x, step.layer, (a, b), (kh, kw), size) for a in range(kh) for b in range(kw)]


def later_conv(step: Step, how: str, weight, h, out=None) -> torch.Tensor:
    """[b, G*O, H', W'] of a per-network Conv2d on [b, G*C, H, W]."""
    g, o = weight.shape[:2]
    if how == "depthwise":  # one input channel: one depthwise convolution per output channel
        out = out if out is not None else h.new_empty(h.shape[0], g * o, *step.shape_out[1:])
        view = out.view(h.shape[0], g, o, *step.shape_out[1:])
        for k in range(o):
            view[:, :, k] = _conv(step.layer, h, weight[:, k], g)
        return out
    return _conv(step.layer, h, weight.reshape(g * o, *weight.shape[2:]), g)


def first_linear(how: str, weight, features, out=None) -> torch.Tensor:
    """[G, b, out] of a first Linear on shared features [b, F] (weight [G, out, F])."""
    g, width = weight.shape[:2]
    if how == "wide":
        flat = torch.mm(features, weight.reshape(g * width, -1).t())
        if out is None:
            out = flat.new_empty(g, features.shape[0], width)
        return out.copy_(flat.view(-1, g, width).transpose(0, 1))
    expanded = features.expand(g, *features.shape)
    return torch.bmm(expanded, weight.transpose(1, 2), out=out)


def _probe(shape, seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def agrees(
    step: Step, how: str, networks: int, old_networks: int, pool: Step | None = None
) -> bool:
    """Whether `how` on `networks` networks gives the bits of the old call on `old_networks`
    (one chunk of StackedForward) for this step's shapes, on random numbers (both ends of the
    old chunk); "pooled": followed by the max-pool `pool`. Cached per shape: a few
    milliseconds once per process."""
    pooled = (tuple(pool.shape_out), tiling(pool.layer)) if how == "pooled" else None
    return _agrees(step.signature, how, networks, old_networks, pooled)


@functools.cache
def _agrees(signature: tuple, how: str, networks: int, old_networks: int, pooled=None) -> bool:
    kind, shape_in, shape_out = signature[:3]
    c, o = shape_in[0], shape_out[0]
    parts = [(0, networks), (old_networks - networks, old_networks)]
    if kind == "linear":
        weight = _probe((old_networks, o, c), 1)
        x = _probe((4 * GEMM_ROWS, c), 2)
        old = torch.bmm(x.expand(old_networks, *x.shape), weight.transpose(1, 2))
        return all(torch.equal(first_linear(how, weight[a:b], x), old[a:b]) for a, b in parts)
    kernel, stride, padding, dilation = signature[3:]
    layer = nn.Conv2d(c, o, kernel, stride, padding, dilation, bias=False, device="meta")
    step = Step(kind, layer, None, None, shape_in, shape_out)
    weight = _probe((old_networks, o, c, *kernel), 3)
    flat = weight.reshape(old_networks * o, c, *kernel)
    if how == "pooled":
        x = _probe((2, *shape_in), 4)
        old = F.max_pool2d(_conv(layer, x, flat, 1), pooled[1])
        pool = Step("pool", nn.MaxPool2d(pooled[1]), None, None, shape_out, pooled[0])
        columns = window_columns(x, step, pool)
        return all(
            torch.equal(pooled_conv(kernel_rows(weight[a:b]), pool, columns), old[:, a * o : b * o])
            for a, b in parts
        )
    if how in ("im2col", "conv"):  # a first layer: shared images
        x = _probe((2, *shape_in), 4)
        old = _conv(layer, x, flat, 1)
        columns = patches(x, layer)
        return all(
            torch.equal(first_conv(step, how, weight[a:b], x, columns), old[:, a * o : b * o])
            for a, b in parts
        )
    h = _probe((2, old_networks * c, *shape_in[1:]), 5)
    old = _conv(layer, h, flat, old_networks)
    return all(
        torch.equal(later_conv(step, how, weight[a:b], h[:, a * c : b * c]), old[:, a * o : b * o])
        for a, b in parts
    )


def formulations(plan: WidePlan, networks: int, old_networks: int) -> list[str | None] | None:
    """Per step, the fastest formulation that agrees (None for steps without weights), or None
    when some step has none at this sub-chunk size (then use networks == old_networks)."""
    chosen: list[str | None] = []
    for i, step in enumerate(plan.steps):
        if step.kind not in ("conv", "linear"):
            chosen.append(None)
            continue
        if i == 0 and step.kind == "conv":
            options = ("pooled", "im2col", "conv") if plan.first_pool else ("im2col", "conv")
        elif i == 0:
            options = ("wide", "expanded")
        elif step.kind == "linear":
            chosen.append("bmm")  # the old call itself, per network
            continue
        else:
            options = ("depthwise", "grouped") if step.shape_in[0] == 1 else ("grouped",)
        pool = plan.first_pool[1] if plan.first_pool else None
        found = next(
            (how for how in options if agrees(step, how, networks, old_networks, pool)), None
        )
        if found is None:
            return None
        chosen.append(found)
    return chosen
