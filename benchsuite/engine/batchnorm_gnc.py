"""Train-mode logits of many BatchNorm networks (ResNet4) for Guess & Check's decisions.

Why: the generic path (vmap of functional_call, decisions.py) spent most of its time outside the
convolutions: BatchNorm's variance as a strided reduction (28%), max-pool with indices (~30%) and
seven element-wise passes per BatchNorm. Here K networks live as ONE tensor [N, K*C, H, W] in
channels-last memory, i.e. a matrix [N*H*W, K*C] with each network's channels side by side:
- the first convolution sees the same N images for every network: their im2col patches are built
  once, and the layer is one matrix product with all K*C_out kernels stacked (no grouping, no
  repeated input); later ones are grouped convolutions (groups=K), channels-last;
- BatchNorm's training-set statistics (mean, biased variance over N*H*W: protocol.md's G&C rule,
  see benchsuite.batchnorm.calibrate_batchnorm) are column sums of that matrix by pairwise
  halving (element-wise adds: a column's sum does not depend on the chunk's width), and the
  normalization is folded into one scale and shift per channel, in place;
- BatchNorm -> ReLU -> MaxPool2d normalizes after pooling: y = relu(x * a + c) with a > 0 is
  non-decreasing in x, also in float32 (each rounding is monotone), so max then normalize gives
  the same bits as normalize then max, on a quarter of the values. Checked per chunk (a > 0).

Numbers: the logits equal train-mode logits up to float32 rounding (another summation order than
the vmap path), so a decision can differ only for a candidate within rounding of a tie; every
accepted candidate is re-checked in the host's arithmetic anyway (gnc.py). Each network's numbers
do not depend on how many networks share the call (tested; calls of fewer than MIN_GROUPS are
padded), so decisions do not depend on chunks.
Modules: Sequentials of Conv2d (no groups, no bias), BatchNorm2d, ReLU, MaxPool2d, Flatten, Linear
(no bias), and ResNet4's Residual, GlobalMaxPool and Scale (recognized by name; the plan is
checked against the generic forward when it is built). CPU only: CUDA keeps the vmap path.
"""

from __future__ import annotations

import copy
import threading

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from benchsuite.stacked import StackedForward

# oneDNN chooses its grouped-convolution algorithm by the group count: on the AMD EPYC, calls of
# 1-6 networks gave other bits than the same networks among 7 or more (never on the Intel Xeon),
# so smaller calls are padded to this many networks
MIN_GROUPS = 8


def _kind(module: nn.Module) -> str | None:
    """The step a module becomes, or None when this path cannot run it."""
    if isinstance(module, nn.Sequential):
        return "sequential"
    if isinstance(module, nn.Conv2d):
        ok = module.groups == 1 and module.bias is None and module.padding_mode == "zeros"
        return "conv" if ok and isinstance(module.padding, tuple) else None
    if isinstance(module, _BatchNorm):
        return "batchnorm" if module.affine else None
    if isinstance(module, nn.ReLU):
        return "relu"
    if isinstance(module, nn.MaxPool2d):
        plain = module.padding == 0 and module.dilation == 1 and not module.return_indices
        return "pool" if plain and not module.ceil_mode else None
    if isinstance(module, nn.Linear):
        return "linear" if module.bias is None else None
    if isinstance(module, nn.Flatten):
        return "flatten" if module.start_dim == 1 and module.end_dim == -1 else None
    name = type(module).__name__
    if name == "Residual" and isinstance(getattr(module, "body", None), nn.Module):
        return "residual"
    if name == "GlobalMaxPool" and not list(module.children()):
        return "globalmax"
    if name == "Scale" and isinstance(getattr(module, "factor", None), (int, float)):
        return "scale"
    return None


def _compile(module: nn.Module, prefix: str) -> list[tuple]:
    """Steps (kind, parameter prefix, module, ...) of `module`; nested Sequentials flattened."""
    kind = _kind(module)
    if kind is None:
        raise TypeError(f"unsupported module {type(module).__name__}")
    if kind == "sequential":
        steps = []
        for name, child in module.named_children():
            steps += _compile(child, f"{prefix}{name}.")
        return steps
    if kind == "residual":
        return [("residual", prefix, module, _compile(module.body, f"{prefix}body."))]
    return [(kind, prefix, module)]


def _fuse(steps: list[tuple]) -> list[tuple]:
    """BatchNorm [-> ReLU] [-> MaxPool2d] as one step (normalization after the pool)."""
    fused, i = [], 0
    while i < len(steps):
        step = steps[i]
        if step[0] == "residual":
            fused.append((*step[:3], _fuse(step[3])))
            i += 1
            continue
        if step[0] != "batchnorm":
            fused.append(step)
            i += 1
            continue
        relu = i + 1 < len(steps) and steps[i + 1][0] == "relu"
        j = i + 1 + relu
        pool = steps[j][2] if relu and j < len(steps) and steps[j][0] == "pool" else None
        fused.append(("bn", step[1], step[2], relu, pool))
        i = j + (pool is not None)
    return fused


def _rows(h: torch.Tensor) -> torch.Tensor:
    """[N, KC, H, W] channels-last -> the [N*H*W, KC] matrix it is in memory (a view)."""
    return h.permute(0, 2, 3, 1).reshape(-1, h.shape[1])


def _halve_in_place(rows: torch.Tensor) -> torch.Tensor:
    """Column sums of [M, KC] that we own, by pairwise halving in place (row i += row i + M/2,
    ...): element-wise adds only, so a column's sum never depends on how many columns there are
    (torch's column reduction changes its order with the width: results would depend on the
    chunk size). As accurate as a cascade sum."""
    while rows.shape[0] > 1:
        half = rows.shape[0] // 2
        if rows.shape[0] % 2:
            rows[:1] += rows[2 * half :]
        rows[:half] += rows[half : 2 * half]
        rows = rows[:half]
    return rows[0]


def _column_statistics(rows: torch.Tensor, work: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(biased variance, mean) of each column of [M, KC], two-pass as torch.var (no E[x^2] -
    E[x]^2 cancellation); `work` is scratch of rows' size (fresh memory would page-fault on every
    call). torch.var_mean over dim 0 is ~30x slower on this layout."""
    count, half = rows.shape[0], rows.shape[0] // 2
    if count == 1:
        return torch.zeros_like(rows[0]), rows[0].clone()
    first = torch.add(rows[:half], rows[half : 2 * half], out=work[:half])
    if count % 2:
        first[:1] += rows[2 * half :]
    mean = _halve_in_place(first).div(count)
    centered = torch.sub(rows, mean, out=work).square_()
    return _halve_in_place(centered).div(count), mean


class BatchNormPlan:
    """Logits [K, N, out] of K stacked networks in train mode on the fixed points x [N, C, H, W]."""

    def __init__(self, module: nn.Module, x: torch.Tensor):
        self.steps = _fuse(_compile(module, ""))
        if not any(s[0] == "bn" for s in self._all_steps(self.steps)):
            raise TypeError("no BatchNorm: the other fast paths apply")
        if not self.steps or self.steps[0][0] != "conv":
            raise TypeError("the first layer must be a convolution (it reads the shared points)")
        self.x = x.contiguous(memory_format=torch.channels_last)
        self._local = threading.local()  # per-thread scratch: worker threads share the plan
        self._first_patches = None
        self._check(module)

    @staticmethod
    def of(module: nn.Module, x: torch.Tensor) -> BatchNormPlan | None:
        """The plan for `module` on the points x, or None where this path does not apply
        (not CPU float32 images, a module it cannot run, no BatchNorm)."""
        if x.device.type != "cpu" or x.dtype != torch.float32 or x.dim() != 4:
            return None
        try:
            return BatchNormPlan(module, x)
        except TypeError:
            return None

    def _all_steps(self, steps):
        for step in steps:
            yield step
            if step[0] == "residual":
                yield from self._all_steps(step[3])

    @torch.no_grad()
    def _check(self, module: nn.Module) -> None:
        """The plan must compute the module's train-mode logits (up to rounding) on two draws."""
        template = copy.deepcopy(module).train()
        generator = torch.Generator().manual_seed(0)
        params = {
            name: torch.empty((2, *p.shape)).uniform_(-1, 1, generator=generator)
            for name, p in template.named_parameters()
        }
        for step in self._all_steps(self.steps):
            if step[0] == "bn":  # protocol.md's BatchNorm ranges: the weights are positive
                params[f"{step[1]}weight"].uniform_(0.9, 1.1, generator=generator)
        buffers = {
            k: v.unsqueeze(0).expand(2, *v.shape).clone() for k, v in template.named_buffers()
        }
        try:
            expected = StackedForward(template)(params, buffers, self.x.contiguous())
            got = self.logits(params)
        except RuntimeError as error:
            raise TypeError(f"the plan cannot run this module: {error}") from error
        if got.shape != expected.shape or not torch.allclose(got, expected, rtol=1e-3, atol=1e-5):
            raise TypeError("the plan does not reproduce the module's forward")

    @torch.no_grad()
    def logits(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """[K, N, out] train-mode logits; BatchNorm statistics over all N points per network."""
        k = next(iter(params.values())).shape[0]
        if 0 < k < MIN_GROUPS:  # padded with copies of the first network, dropped after
            padded = {n: torch.cat([v, v[:1].expand(MIN_GROUPS - k, *v.shape[1:])]) for n, v in params.items()}
            return self._run(self.steps, self.x, padded, MIN_GROUPS, shared=True)[:k]
        return self._run(self.steps, self.x, params, k, shared=True)

    def _run(self, steps, h, params, k, shared=False):
        for step in steps:
            kind, prefix = step[0], step[1]
            if kind == "conv":
                h = self._conv(h, params[f"{prefix}weight"], step[2], k, shared)
                shared = False
            elif kind == "bn":
                h = self._batchnorm(h, params, prefix, step[2].eps, step[3], step[4])
            elif kind == "relu":
                h = torch.relu(h)
            elif kind == "pool":
                h = self._pool(h, step[2])
            elif kind == "residual":
                h = h + self._run(step[3], h, params, k)
            elif kind == "globalmax":
                h = h.amax(dim=(-2, -1))  # [N, KC]
            elif kind == "flatten":  # each network's (C, H, W) in that order: [N, K, C*H*W]
                h = h.reshape(h.shape[0], k, -1)
            elif kind == "linear":
                w = params[f"{prefix}weight"]  # [K, out, C]
                h = torch.bmm(h.reshape(h.shape[0], k, -1).transpose(0, 1), w.transpose(1, 2))
            elif kind == "scale":
                h = h * step[2].factor
        return h

    def _conv(self, h, w, layer, k, shared):
        """Shared input: all K*C_out kernels against the same image patches, ONE matrix product
        [N*H*W, C*kh*kw] @ [C*kh*kw, K*C_out] whose result is already the channels-last matrix;
        otherwise a grouped convolution, network g in group g."""
        if shared:
            patches, shape = self._patches(layer)
            out = patches @ w.reshape(w.shape[0] * w.shape[1], -1).t()
            return out.view(*shape, -1).permute(0, 3, 1, 2)
        stacked = w.reshape(-1, *w.shape[2:])
        out = F.conv2d(
            h, stacked, stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
            groups=k,
        )  # fmt: skip
        return out.contiguous(memory_format=torch.channels_last)

    def _patches(self, layer):
        """The first convolution's im2col of the fixed points, built once: [N*Ho*Wo, C*kh*kw]."""
        if getattr(self, "_first_patches", None) is None:
            x = self.x.contiguous()
            cols = F.unfold(x, layer.kernel_size, layer.dilation, layer.padding, layer.stride)
            out_h, out_w = F.conv2d(
                x[:1, :, :, :], torch.zeros(1, *layer.weight.shape[1:]),
                stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
            ).shape[-2:]  # fmt: skip
            self._first_patches = (
                cols.transpose(1, 2).reshape(-1, cols.shape[1]).contiguous(),
                (x.shape[0], out_h, out_w),
            )
        return self._first_patches

    def _scratch(self, numel: int) -> torch.Tensor:
        buffer = getattr(self._local, "buffer", None)
        if buffer is None or buffer.numel() < numel:
            buffer = self._local.buffer = torch.empty(numel)
        return buffer[:numel]

    @staticmethod
    def _pool(h, layer):
        """Max-pool; 2x2 with stride 2 as three maxima of strided views of the channels-last
        matrix (max is exact, NaNs propagate as in max_pool2d; ~3x faster here)."""
        sizes = (layer.kernel_size, layer.stride)
        if all(v == 2 or v == (2, 2) for v in sizes):
            n, c, height, width = h.shape
            v = h[:, :, : height // 2 * 2, : width // 2 * 2].permute(0, 2, 3, 1)
            v = v.reshape(n, height // 2, 2, width // 2, 2, c)
            top = torch.maximum(v[:, :, 0, :, 0], v[:, :, 0, :, 1])
            out = torch.maximum(top, torch.maximum(v[:, :, 1, :, 0], v[:, :, 1, :, 1]), out=top)
            return out.permute(0, 3, 1, 2)
        return F.max_pool2d(h, layer.kernel_size, layer.stride).contiguous(
            memory_format=torch.channels_last
        )

    def _batchnorm(self, h, params, prefix, eps, relu, pool):
        """Train-mode BatchNorm (+ ReLU, + pool) with the statistics of all N*H*W values.
        Normalizes in place: h is this plan's own intermediate (a convolution's output)."""
        rows = _rows(h)
        var, mean = _column_statistics(rows, self._scratch(rows.numel()).view(rows.shape))
        scale = params[f"{prefix}weight"].reshape(-1) * torch.rsqrt(var + eps)
        shift = params[f"{prefix}bias"].reshape(-1) - mean * scale
        if pool is not None and bool((scale > 0).all()):
            h = self._pool(h, pool)
            pool = None
        rows = _rows(h)
        torch.addcmul(shift, rows, scale, out=rows)
        if relu:
            rows.relu_()
        return self._pool(h, pool) if pool is not None else h
