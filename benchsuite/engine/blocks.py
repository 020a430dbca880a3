"""One sub-chunk of networks on one block of images, in the wide layout of engine/wide.py.

Why a module of its own: this is the inner loop of evaluation. What is shared by every network
(the prefix's features, the first layer's im2col patches) is made once per block (`Block`); what
belongs to a sub-chunk (its kernels as im2col rows, bias views) once per sub-chunk (`SubChunk`);
activations go into buffers reused from block to block (`Workspace`), so that nothing large is
allocated, and page-faulted, per call.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from benchsuite.engine.wide import (
    WidePlan,
    first_conv,
    first_linear,
    kernel_rows,
    later_conv,
    patches,
    pooled_conv,
    tiling,
    window_columns,
)


class Workspace:
    """Buffers by name, reallocated only when the shape changes (one per worker thread)."""

    def __init__(self):
        self.buffers: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape, like: torch.Tensor) -> torch.Tensor:
        buffer = self.buffers.get(name)
        if buffer is None or buffer.shape != torch.Size(shape):
            buffer = self.buffers[name] = like.new_empty(shape)
        return buffer


class Block:
    """A block of images and what every network shares on it, made on first use."""

    def __init__(self, plan: WidePlan, x: torch.Tensor, sub_blocks: list[tuple[int, int]]):
        self.plan, self.x, self.sub_blocks = plan, x, sub_blocks
        self.rows = int(x.shape[0])
        self._features: torch.Tensor | None = None
        self._columns: dict[int, torch.Tensor] = {}

    def features(self) -> torch.Tensor:
        if self._features is None:
            self._features = self.plan.prefix(self.x).contiguous()
        return self._features

    def columns(self, a: int, b: int) -> torch.Tensor:
        if a not in self._columns:
            self._columns[a] = patches(self.features()[a:b], self.plan.first.layer)
        return self._columns[a]

    def window_columns(self, a: int, b: int) -> list[torch.Tensor]:
        key = -1 - a
        if key not in self._columns:
            self._columns[key] = window_columns(
                self.features()[a:b], self.plan.first, self.plan.first_pool[1]
            )
        return self._columns[key]


class SubChunk:
    """G networks' weights as their formulations (engine.wide.formulations) need them."""

    def __init__(self, plan: WidePlan, parameters: dict[str, torch.Tensor], hows: list):
        self.hows = hows
        self.count = int(parameters[plan.first.weight].shape[0])
        g = self.count
        self.weights, self.biases, self.rows = [], [], None
        for step, how in zip(plan.steps, hows):
            weight = parameters[step.weight] if step.weight else None
            bias = parameters[step.bias] if step.bias else None
            if step.kind == "conv" and bias is not None:
                bias = bias.reshape(1, g * bias.shape[1], 1, 1)
            elif step.kind == "linear" and bias is not None:
                bias = bias.unsqueeze(1)
            if how == "bmm":
                weight = weight.transpose(1, 2)
            self.weights.append(weight)
            self.biases.append(bias)
        if hows[0] in ("im2col", "pooled"):
            self.rows = kernel_rows(self.weights[0])


def _pool(h: torch.Tensor, step, work: Workspace, name: str) -> torch.Tensor:
    """Max-pooling with kernel == stride as maxima of strided slices (max is exact, and
    torch.maximum propagates NaN as max_pool2d does); anything else through F.max_pool2d."""
    layer = step.layer
    if tiling(layer) is None:
        return F.max_pool2d(
            h, layer.kernel_size, layer.stride, layer.padding, layer.dilation, layer.ceil_mode
        )
    kh, kw = tiling(layer)
    out_h, out_w = step.shape_out[1:]
    rows = h[..., 0 : kh * out_h : kh, :]
    if kh > 1:
        target = work.get(name + "r", (*h.shape[:2], out_h, h.shape[3]), h)
        for i in range(1, kh):
            rows = torch.maximum(rows, h[..., i : i + kh * out_h : kh, :], out=target)
    cells = rows[..., 0 : kw * out_w : kw]
    if kw > 1:
        target = work.get(name + "c", (*h.shape[:2], out_h, out_w), h)
        for j in range(1, kw):
            cells = torch.maximum(cells, rows[..., j : j + kw * out_w : kw], out=target)
    return cells


def _convolutional(plan: WidePlan, chunk: SubChunk, block: Block, a: int, b: int, work):
    """Steps before the Flatten on images a..b: [b - a, G*C, H, W]."""
    steps, g = plan.steps, chunk.count
    h = None
    i = 0
    while i < plan.flat_from:
        step, how = steps[i], chunk.hows[i]
        if i == 0 and how == "pooled":  # conv, ReLU and max-pool at once (engine.wide)
            covered, pool, relu = plan.first_pool
            columns = block.window_columns(a, b)
            shape = (b - a, chunk.rows.shape[0], columns[0].shape[-1])
            h = pooled_conv(
                chunk.rows, pool, columns, work.get("first", shape, chunk.rows),
                work.get("scratch", shape, chunk.rows),
            )  # fmt: skip
            if chunk.biases[0] is not None:  # after the max: x -> x + c is monotone
                h.add_(chunk.biases[0])
            if relu:
                h.relu_()
            i = covered
            continue
        if step.kind == "conv":
            if i == 0:
                shape = (b - a, g * step.shape_out[0], step.shape_out[1] * step.shape_out[2])
                h = first_conv(
                    step, how, chunk.weights[0], block.features()[a:b],
                    block.columns(a, b) if how == "im2col" else None,
                    work.get("first", shape, chunk.weights[0]) if how == "im2col" else None,
                    chunk.rows,
                )  # fmt: skip
            else:
                h = later_conv(step, how, chunk.weights[i], h)
            if chunk.biases[i] is not None:
                h.add_(chunk.biases[i])
        elif step.kind == "relu":
            following = steps[i + 1] if i + 1 < plan.flat_from else None
            if following is not None and following.kind == "pool":  # max and ReLU commute
                h = _pool(h, following, work, f"pool{i + 1}").relu_()
                i += 2
                continue
            h = h.relu_()
        elif step.kind == "pool":
            h = _pool(h, step, work, f"pool{i}")
        i += 1
    return h


@torch.no_grad()
def logits(plan: WidePlan, chunk: SubChunk, block: Block, work: Workspace) -> torch.Tensor:
    """[G, rows, out]: the sub-chunk's networks on the block's images."""
    g, rows = chunk.count, block.rows
    if plan.flat_from > 0:
        width = plan.flat_width()
        h = work.get("flat", (g, rows, width), chunk.weights[0])
        for a, b in block.sub_blocks:
            part = _convolutional(plan, chunk, block, a, b, work)
            h[:, a:b].copy_(part.reshape(b - a, g, width).transpose(0, 1))
    else:
        h = block.features()
    for i in range(plan.flat_from, len(plan.steps)):
        step, how = plan.steps[i], chunk.hows[i]
        if step.kind == "linear":
            out = work.get(f"linear{i}", (g, rows, step.shape_out[0]), chunk.weights[i])
            if i == 0:
                h = first_linear(how, chunk.weights[0], h, out)
            else:
                h = torch.bmm(h, chunk.weights[i], out=out)
            if chunk.biases[i] is not None:
                h.add_(chunk.biases[i])
        elif step.kind == "relu":
            h = h.relu_()
    return h
