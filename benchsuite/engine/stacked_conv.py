"""Hand-written forward and backward of many stacked convolutional networks (the LeNet family).

Why by hand: the generic path (torch.func.vmap of functional_call plus autograd) spends a LeNet
step at batch size 2 in bookkeeping (vmap's layout moves, autograd's graph, a torch.optim call per
tensor) and in oneDNN's grouped convolutions, slow for a few channels per group. Here each network
draws its own batch (batch_order "independent") and keeps its activations as [K, C, b, H, W]; a
unit-stride unpadded Conv2d (LeNet's) is one bmm of the stacked kernels [K, C_out, C*kh*kw] with
the patches [K, C*kh*kw, b*Ho*Wo] (im2col by one strided copy; the input gradient summed back by
kw + kh strided adds); MaxPool2d(2) is three maxima of strided quarters (tiled_max_pool) with
max_pool2d's indices, and a ReLU before a pool runs after it (they commute, 4x fewer elements);
pools, ReLUs and their backward act on all networks at once; the Linear layers after Flatten are
batched matmuls as in engine/stacked_mlp.py. The first layer computes no input gradient.
Gradients go into one flat buffer, which the written-out SGD/Adam
(engine/stacked_optim.py) steps as one tensor. Measured (docs/performance.md, one thread, LeNet
28x28): 2-2.5x the vmap path's network-steps/s and 1.5-2.8x the reference code's grouped
convolutions; the largest remaining costs are the first convolution's patches (memory bound),
the bmm products, the col2im adds and per-op overhead.

Smaller networks of that kind (up to NATIVE_MAX_CONV_MACS per image, LeNet 28x28 up to width 1)
go one step further where engine/native.py's compiled kernel is built (`_run_native`): convnet.c
computes each network's forward and backward one image at a time in cache, no patches, no
per-op overhead (1.4-2.7x the patches formulation at widths 1/6-2/6, measured; equal to it to
float32 rounding, another summation order).

Exactness (tests/test_stacked_conv.py, tests/test_convnet.py): every kernel computes each network by
itself (bmm, as on the "mlp" path, or convnet.c), so a network trained in a stack equals it trained
alone, bit for bit, whatever the stack size or worker count. Against the vmap path (oneDNN's direct
convolution sums in another order): equal to float32 rounding (differences grow with training, as
any rounding change does), the same networks accepted on the test fixtures. Strided, padded or
dilated convolutions take the grouped formulation (`_run_steps`: vmap's own batching rule, its
numbers bit for bit for the same sub-stack, which engine/parts.py splits by size alone).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
from dataclasses import dataclass

import torch
from torch import nn

from benchsuite.engine import native
from benchsuite.engine.divergence import note_blown_up
from benchsuite.engine.stacked_mlp import (
    gather_limit,
    loss_gradient_table,
    network_steppers,
    stacked_stepper,
    step_runs,
)
from benchsuite.engine.stacked_optim import DirectSGD
from benchsuite.engine.threads import cpu_threads, spread
from benchsuite.errors import OptimizerStepError

PATCHES = True  # unit-stride, unpadded convolutions as patches x kernels (see _run_patches)


@dataclass(frozen=True)
class Op:
    kind: str  # "conv", "relu", "pool", "flatten", "linear"
    weight: str | None = None
    bias: str | None = None
    options: tuple = ()  # conv: (stride, padding, dilation); pool: (kernel, stride, pad, dil, ceil)


@dataclass(frozen=True)
class ConvPlan:
    """A Sequential seen as conv-stage ops ([b, K*C, H, W]), one Flatten, then Linear/ReLU ops."""

    ops: tuple[Op, ...]
    patches: bool = False  # convolutions as im2col patches times stacked kernels (bmm)


def _pair(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (int(value), int(value))


def plan_conv(module: nn.Module) -> ConvPlan | None:
    """The ConvPlan of `module`, or None: a plain Sequential of Conv2d (zeros padding, groups 1),
    ReLU and MaxPool2d, one Flatten, then Linear and ReLU; the first weighted layer a Conv2d."""
    if type(module) is not nn.Sequential or any(True for _ in module.buffers()):
        return None
    ops, flattened = [], False
    for name, child in module.named_children():
        kind = type(child)
        if kind is nn.Conv2d and not flattened:
            if child.groups != 1 or child.padding_mode != "zeros" or isinstance(child.padding, str):
                return None
            bias = f"{name}.bias" if child.bias is not None else None
            options = (_pair(child.stride), _pair(child.padding), _pair(child.dilation))
            ops.append(Op("conv", f"{name}.weight", bias, options))
        elif kind is nn.MaxPool2d and not flattened:
            if child.return_indices:
                return None
            kernel = _pair(child.kernel_size)
            stride = _pair(child.stride if child.stride is not None else kernel)
            options = (kernel, stride, _pair(child.padding), _pair(child.dilation), child.ceil_mode)
            ops.append(Op("pool", options=options))
        elif kind is nn.Flatten and not flattened:
            if child.start_dim != 1 or child.end_dim != -1:
                return None
            ops.append(Op("flatten"))
            flattened = True
        elif kind is nn.Linear and flattened:
            bias = f"{name}.bias" if child.bias is not None else None
            ops.append(Op("linear", f"{name}.weight", bias))
        elif kind is nn.ReLU:
            ops.append(Op("relu"))
        elif kind is nn.Identity:
            continue
        else:
            return None
    weighted = [op for op in ops if op.weight is not None]
    if not flattened or not weighted or weighted[0].kind != "conv" or ops[-1].kind != "linear":
        return None
    plain = all(op.options == ((1, 1), (0, 0), (1, 1)) for op in ops if op.kind == "conv")
    patches = PATCHES and plain
    return ConvPlan(_relu_after_pools(ops) if patches else tuple(ops), patches)


def _relu_after_pools(ops: list[Op]) -> tuple[Op, ...]:
    """ReLU then MaxPool2d as MaxPool2d then ReLU: max and ReLU commute (the same values; the
    same gradients, bit for bit, see tiled_max_pool), and the ReLU acts on 4x fewer elements."""
    ops = list(ops)
    for i in range(len(ops) - 1):
        if ops[i].kind == "relu" and ops[i + 1].kind == "pool":
            ops[i], ops[i + 1] = ops[i + 1], ops[i]
    return tuple(ops)


def train_stacked_conv(
    plan: ConvPlan,
    images: torch.Tensor,
    labels: torch.Tensor,
    parameters: dict[str, torch.Tensor],
    steps: list[torch.Tensor],
    make_optimizer,
    flat_optimizer: bool = False,
    direct=None,
    make_stepper=None,
    summed_loss: bool = False,
    optimizer_per_network: bool = False,
) -> dict[str, torch.Tensor]:
    """Train K stacked networks: at step t network k takes one step on images[steps[t][k]].

    The arguments are those of stacked_mlp.train_stacked_mlp (images [N, C, H, W] in place of its
    features). Returns the trained stacked parameters (views into one buffer).
    """
    if optimizer_per_network:
        flat, params, grads, stepper = network_steppers(parameters, make_optimizer, make_stepper)
    else:
        flat, params, grads, stepper = stacked_stepper(
            parameters, make_optimizer, flat_optimizer, direct, make_stepper
        )
    run = _run_patches if plan.patches else _run_steps
    ops = native_ops(plan, params, grads, images.shape[1:])
    if ops is not None:
        run = functools.partial(_run_native, ops)
    try:
        stepper.start()
        run(plan, params, grads, images, labels, steps, stepper, summed_loss)
        stepper.finish()
    except OptimizerStepError as error:  # which networks were NaN or inf (the numerics rule)
        note_blown_up(error, [*params.values(), *grads.values()], stepper)
        raise
    finally:
        flat.grad = None
        for value in params.values():
            value.grad = None
    return params


def _linear_backward(op: Op, grad, inputs, params, grads):
    """A Linear layer's backward over the stack: its weight and bias gradients into `grads`, the
    gradient of its input returned (both formulations' heads are these batched matmuls)."""
    torch.bmm(grad.transpose(1, 2), inputs, out=grads[op.weight])
    if op.bias is not None:
        torch.sum(grad, 1, out=grads[op.bias])
    return torch.bmm(grad, params[op.weight])


def gathered_steps(images, labels, classes, steps, per_network: bool = False):
    """Per step (images, loss gradients [K, b, classes]), gathered for a chunk of equally shaped
    steps at once (one index_select each per chunk). Images come as [b, K*C, H, W] (the grouped
    formulation) or, with `per_network`, as a [K, C, b, H, W] view (the patches formulation,
    stacked_resnet)."""
    tables = {}
    most = gather_limit(images[0].numel(), classes, images.element_size())
    for start, stop, count, batch in step_runs(steps, most):
        indices = torch.stack(steps[start:stop])  # [T, K, b]
        if batch not in tables:
            tables[batch] = loss_gradient_table(labels, classes, batch, images.dtype)
        gradients = tables[batch].index_select(0, indices.view(-1))
        gradients = gradients.view(stop - start, count, batch, classes)
        if per_network:
            gathered = images.index_select(0, indices.view(-1))
            gathered = gathered.view(stop - start, count, batch, *images.shape[1:])
            for s in range(stop - start):
                yield gathered[s].transpose(1, 2), gradients[s]
        else:
            gathered = images.index_select(0, indices.transpose(1, 2).reshape(-1))
            gathered = gathered.view(stop - start, batch, count * images.shape[1], *images.shape[2:])
            for s in range(stop - start):
                yield gathered[s], gradients[s]


def _run_steps(plan, params, grads, images, labels, steps, stepper, summed_loss):
    ops = plan.ops
    classes = params[ops[-1].weight].shape[1]
    count = steps[0].shape[0] if steps else 0
    # weights and biases as the stacked kernels take them, views made once (they follow updates)
    weights, biases, grad_weights = {}, {}, {}
    for op in ops:
        if op.kind == "conv":
            w = params[op.weight]
            weights[op.weight] = w.view(count * w.shape[1], *w.shape[2:])
            grad_weights[op.weight] = grads[op.weight].view_as(weights[op.weight])
            if op.bias is not None:
                biases[op.bias] = params[op.bias].view(1, -1, 1, 1)
        elif op.kind == "linear":
            weights[op.weight] = params[op.weight].transpose(1, 2)
            if op.bias is not None:
                biases[op.bias] = params[op.bias].unsqueeze(1)
    first = next(i for i, op in enumerate(ops) if op.weight is not None)
    last = len(ops) - 1
    threshold_backward = torch.ops.aten.threshold_backward
    pool_forward = torch.ops.aten.max_pool2d_with_indices
    pool_backward = torch.ops.aten.max_pool2d_with_indices_backward
    conv_backward = torch.ops.aten.convolution_backward

    def gradients(x, loss_gradient):
        """Forward and backward of one step at the current weights: gradients into `grads`.
        Returns the log-probabilities [K, b, classes]."""
        h, owned = x, False
        inputs, saved = [], {}  # inputs[i]: what op i received; saved: pool indices
        for position, op in enumerate(ops):
            inputs.append(h)
            if op.kind == "conv":
                stride, padding, dilation = op.options
                h = torch.conv2d(h, weights[op.weight], None, stride, padding, dilation, count)
                if op.bias is not None:
                    h.add_(biases[op.bias])
                owned = True
            elif op.kind == "relu":
                h = h.relu_() if owned else torch.relu(h)
                owned = True
            elif op.kind == "pool":
                h, saved[position] = pool_forward(h, *op.options)
                owned = True
            elif op.kind == "flatten":
                batch = h.shape[0]
                h = h.reshape(batch, count, -1).transpose(0, 1)  # [K, b, F] (a view)
                owned = False
            else:
                if op.bias is None:
                    h = torch.bmm(h, weights[op.weight])
                else:
                    h = torch.baddbmm(biases[op.bias], h, weights[op.weight])
                owned = True
        log_probs = torch._log_softmax(h, -1, False)
        grad = torch._log_softmax_backward_data(loss_gradient, log_probs, -1, log_probs.dtype)
        for position in range(last, first - 1, -1):
            op = ops[position]
            if op.kind == "relu":
                output = inputs[position + 1] if position < last else h
                grad = threshold_backward(grad, output, 0)
            elif op.kind == "linear":
                grad = _linear_backward(op, grad, inputs[position], params, grads)
            elif op.kind == "flatten":
                grad = grad.transpose(0, 1).reshape(inputs[position].shape)
            elif op.kind == "pool":
                grad = pool_backward(grad, inputs[position], *op.options, saved[position])
            else:
                stride, padding, dilation = op.options
                mask = [position > first, True, False]
                grad_input, grad_weight, _ = conv_backward(
                    grad, inputs[position], weights[op.weight], None, stride, padding, dilation,
                    False, [0, 0], count, mask,
                )  # fmt: skip
                grad_weights[op.weight].copy_(grad_weight)
                if op.bias is not None:
                    torch.sum(grad.view(grad.shape[0], count, -1, *grad.shape[2:]), (0, 3, 4),
                              out=grads[op.bias])  # fmt: skip
                grad = grad_input
        return log_probs

    run_steps(gradients, images, labels, classes, steps, stepper, summed_loss)


def run_steps(gradients, images, labels, classes, steps, stepper, summed_loss, per_network=False):
    """Every step of a round: `gradients(x, loss_gradient)` (a path's forward and backward at the
    current weights, filling its gradient buffer; it returns the log-probabilities [K, b,
    classes]) at each step's batch (gathered_steps, `per_network` its layout), then the stepper,
    with the closure where the optimizer takes one."""
    with torch.no_grad():
        for x, loss_gradient in gathered_steps(images, labels, classes, steps, per_network):
            gradients(x, loss_gradient)
            if stepper.closure:
                stepper.step(_closure(gradients, x, loss_gradient, summed_loss))
            else:
                stepper.step()


def _closure(gradients, x, loss_gradient, summed):
    """The step's closure: the same batch at the current weights (on the resnet path a train-mode
    forward, so the running statistics move again, as on the vmap path); each network's mean
    cross-entropy [K] (summed: their sum), as stacked_mlp's closure gives it."""

    def closure():
        with torch.no_grad():
            log_probs = gradients(x, loss_gradient)
            losses = torch.mul(loss_gradient, log_probs).sum(dim=(1, 2))
            return losses.sum() if summed else losses

    return closure


def _im2col(x: torch.Tensor, kh: int, kw: int) -> torch.Tensor:
    """[K, C, b, H, W] (any strides) -> patches [K, C*kh*kw, b*Ho*Wo], rows in (c, i, j) order."""
    count, channels, batch, height, width = x.shape
    rows, cols = height - kh + 1, width - kw + 1
    windows = x.unfold(3, kh, 1).unfold(4, kw, 1)  # [K, C, b, Ho, Wo, kh, kw]
    return windows.permute(0, 1, 5, 6, 2, 3, 4).reshape(
        count, channels * kh * kw, batch * rows * cols
    )


def _col2im(patches: torch.Tensor, shape, kh: int, kw: int) -> torch.Tensor:
    """The adjoint of _im2col: patch gradients summed back onto [K, C, b, H, W], in two stages
    (kw strided adds over the columns, then kh over the rows: fewer, larger adds than one per
    kernel offset), in a fixed order."""
    count, channels, batch, height, width = shape
    rows, cols = height - kh + 1, width - kw + 1
    view = patches.view(count, channels, kh, kw, batch, rows, cols)
    summed = torch.zeros(count, channels, kh, batch, rows, width, dtype=patches.dtype,
                         device=patches.device)  # fmt: skip
    for j in range(kw):
        summed[..., j : j + cols].add_(view[:, :, :, j])
    out = torch.zeros(shape, dtype=patches.dtype, device=patches.device)
    for i in range(kh):
        out[:, :, :, i : i + rows].add_(summed[:, :, i])
    return out


TILING = ((2, 2), (2, 2), (0, 0), (1, 1), False)  # MaxPool2d(2)'s options in a ConvPlan


def tiled_max_pool(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MaxPool2d(2) of [..., H, W] as three elementwise maxima of the four strided quarters, with
    the flat indices max_pool2d_with_indices gives (the first maximum in the window's row-major
    order wins ties), so its backward applies unchanged. Faster than max_pool2d on the stack's
    [K*C, b, H, W] planes. Differs from it only where a window holds a NaN (the value is NaN in
    both; the index may differ)."""
    height, width = h.shape[-2:]
    rows, cols = height // 2, width // 2
    tiles = h[..., : 2 * rows, : 2 * cols]
    a, b = tiles[..., 0::2, 0::2], tiles[..., 0::2, 1::2]
    c, d = tiles[..., 1::2, 0::2], tiles[..., 1::2, 1::2]
    top, bottom = torch.maximum(a, b), torch.maximum(c, d)
    pooled = torch.maximum(top, bottom)
    # strict comparisons: the later element wins only when larger (max_pool2d's scan order)
    offset = torch.where(torch.gt(bottom, top), torch.gt(d, c) + width, torch.gt(b, a))
    return pooled, offset.add_(_window_corners(rows, cols, width, h.device))


@functools.lru_cache(maxsize=64)
def _window_corners(rows: int, cols: int, width: int, device) -> torch.Tensor:
    """Flat index of each 2x2 window's top-left element in its [H, W] plane, [rows, cols]."""
    corners = torch.arange(rows, device=device).unsqueeze(1) * (2 * width)
    return corners + torch.arange(cols, device=device) * 2


def _run_patches(plan, params, grads, images, labels, steps, stepper, summed_loss):
    """_run_steps with each network's activations as [K, C, b, H, W] and every convolution as one
    bmm of its kernels [K, C_out, C*kh*kw] with its patches: each network computed by itself."""
    ops = plan.ops
    classes = params[ops[-1].weight].shape[1]
    count = steps[0].shape[0] if steps else 0
    kernels, grad_kernels, transposed, biases = {}, {}, {}, {}
    for op in ops:
        if op.kind == "conv":
            w = params[op.weight]
            kernels[op.weight] = w.view(count, w.shape[1], -1)
            grad_kernels[op.weight] = grads[op.weight].view(count, w.shape[1], -1)
            transposed[op.weight] = kernels[op.weight].transpose(1, 2)
            if op.bias is not None:
                biases[op.bias] = params[op.bias].unsqueeze(2)
        elif op.kind == "linear":
            transposed[op.weight] = params[op.weight].transpose(1, 2)
            if op.bias is not None:
                biases[op.bias] = params[op.bias].unsqueeze(1)
    first = next(i for i, op in enumerate(ops) if op.weight is not None)
    last = len(ops) - 1
    threshold_backward = torch.ops.aten.threshold_backward
    pool_forward = torch.ops.aten.max_pool2d_with_indices
    pool_backward = torch.ops.aten.max_pool2d_with_indices_backward

    def gradients(x, loss_gradient):
        h, owned = x, False  # h: [K, C, b, H, W] before Flatten, [K, b, F] after
        inputs, saved = [], {}  # inputs[i]: what op i received; saved: patches, pool indices
        for position, op in enumerate(ops):
            inputs.append(h)
            if op.kind == "conv":
                kh, kw = params[op.weight].shape[-2:]
                patches = _im2col(h, kh, kw)
                saved[position] = patches
                rows, cols = h.shape[3] - kh + 1, h.shape[4] - kw + 1
                if op.bias is None:
                    h = torch.bmm(kernels[op.weight], patches)
                else:
                    h = torch.baddbmm(biases[op.bias], kernels[op.weight], patches)
                h = h.view(count, -1, x.shape[2], rows, cols)
                owned = True
            elif op.kind == "relu":
                h = h.relu_() if owned else torch.relu(h)
                owned = True
            elif op.kind == "pool" and op.options == TILING:
                h, saved[position] = tiled_max_pool(h)
                owned = True
            elif op.kind == "pool":
                shape = h.shape
                pooled, indices = pool_forward(h.flatten(0, 1), *op.options)
                h = pooled.view(*shape[:3], *pooled.shape[2:])
                saved[position] = indices.view(h.shape)
                owned = True
            elif op.kind == "flatten":
                h = h.transpose(1, 2).reshape(count, h.shape[2], -1)  # [K, b, C*H*W]
                owned = True
            else:
                if op.bias is None:
                    h = torch.bmm(h, transposed[op.weight])
                else:
                    h = torch.baddbmm(biases[op.bias], h, transposed[op.weight])
                owned = True
        log_probs = torch._log_softmax(h, -1, False)
        grad = torch._log_softmax_backward_data(loss_gradient, log_probs, -1, log_probs.dtype)
        for position in range(last, first - 1, -1):
            op = ops[position]
            if op.kind == "relu":
                output = inputs[position + 1] if position < last else h
                grad = threshold_backward(grad, output, 0)
            elif op.kind == "linear":
                grad = _linear_backward(op, grad, inputs[position], params, grads)
            elif op.kind == "flatten":
                shape = inputs[position].shape  # [K, C, b, H, W]
                grad = grad.view(count, shape[2], shape[1], *shape[3:]).transpose(1, 2).contiguous()
            elif op.kind == "pool":
                source = inputs[position]
                grad = pool_backward(
                    grad.flatten(0, 1), source.flatten(0, 1), *op.options,
                    saved[position].flatten(0, 1),
                ).view(source.shape)  # fmt: skip
            else:
                patches = saved[position]
                flat = grad.reshape(count, grad.shape[1], -1)  # [K, C_out, b*Ho*Wo]
                torch.bmm(flat, patches.transpose(1, 2), out=grad_kernels[op.weight])
                if op.bias is not None:
                    torch.sum(flat, 2, out=grads[op.bias])
                if position > first:
                    kh, kw = params[op.weight].shape[-2:]
                    grad = _col2im(
                        torch.bmm(transposed[op.weight], flat), inputs[position].shape, kh, kw
                    )
        return log_probs

    # images as [K, C, b, H, W] views (the first im2col reads them)
    run_steps(gradients, images, labels, classes, steps, stepper, summed_loss, per_network=True)


class NativeOp(ctypes.Structure):
    """convnet.c's Op."""

    _fields_ = [
        *[(name, ctypes.c_int64) for name in ("kind", "cin", "h", "w", "cout", "kh", "kw")],
        *[(name, ctypes.c_void_p) for name in ("weight", "bias", "grad_weight", "grad_bias")],
        ("weight_stride", ctypes.c_int64),
        ("bias_stride", ctypes.c_int64),
        ("factor", ctypes.c_double),
    ]


NATIVE_KINDS = {"conv": 0, "pool": 1, "relu": 2, "linear": 3}
# convnet.c (blocked, numerics revision 10) against _run_patches, SGD, 64 networks, wall clock,
# two runs (benchmarks/native_threshold.py, docs/performance.md): 1.3x / 1.2x at 32x32x3 w=1 (593k
# convolution multiply-adds per image), 1.3x / 1.15x at 28x28 w=2 (787k); past 800k no longer
# reliably ahead (32x32x3 8/6, 890k: 1.25x / 0.83x; 10/6 1.04x / 0.84x; w=2, 1.67M: 0.8x /
# 0.7x). A rule of the network alone, so that the formulation, and with it the bits, never
# depends on the machine.
NATIVE_MAX_CONV_MACS = 800_000


def native_ops(plan: ConvPlan, params, grads, image_shape):
    """`plan` as convnet.c's ops over these stacked tensors, or None where the compiled kernel is
    missing (engine/native.py) or cannot take the plan (only unit-stride unpadded convolutions,
    2x2 pools and float32 tensors whose networks are contiguous rows)."""
    if not plan.patches or native.library() is None:
        return None
    names = [name for op in plan.ops for name in (op.weight, op.bias) if name]
    tensors = [params[name] for name in names] + [grads[name] for name in names]
    if any(t.dtype != torch.float32 or t.device.type != "cpu" for t in tensors) or not all(
        t.is_contiguous() for t in tensors
    ):
        return None
    (c, h, w), ops, macs = (int(s) for s in image_shape), [], 0
    for op in plan.ops:
        fields = {"kind": NATIVE_KINDS.get(op.kind, -1), "cin": c, "h": h, "w": w}
        if op.kind == "conv":
            weight = params[op.weight]
            cout, cin, kh, kw = weight.shape[1:]
            if cin != c:
                return None
            fields.update(cout=cout, kh=kh, kw=kw)
            c, h, w = cout, h - kh + 1, w - kw + 1
            macs += c * h * w * cin * kh * kw
        elif op.kind == "pool":
            if op.options != TILING:
                return None
            h, w = h // 2, w // 2
        elif op.kind == "flatten":
            c, h, w = c * h * w, 1, 1
            continue
        elif op.kind == "linear":
            weight = params[op.weight]
            if weight.shape[2] != c:
                return None
            fields.update(cout=weight.shape[1])
            c = weight.shape[1]
        elif op.kind != "relu":
            return None
        if op.weight:
            fields.update(
                weight=params[op.weight].data_ptr(), grad_weight=grads[op.weight].data_ptr(),
                weight_stride=params[op.weight][0].numel(),
            )  # fmt: skip
        if op.bias:
            fields.update(
                bias=params[op.bias].data_ptr(), grad_bias=grads[op.bias].data_ptr(),
                bias_stride=params[op.bias][0].numel(),
            )  # fmt: skip
        ops.append(NativeOp(**fields))
    if macs > NATIVE_MAX_CONV_MACS:
        return None
    return (NativeOp * len(ops))(*ops)


MARGIN_NETWORKS_PER_CALL = 8  # networks per kernel call of native_margin_norms (a thread's share)


@torch.no_grad()
def native_margin_norms(module: nn.Module, parameters, x: torch.Tensor, workers="auto"):
    """||d(f1 - f0)/dx||_2 of every stacked network (parameters [K, ...]) at every image of x:
    [K, B] float64, by convnet.c (each network at each image alone, the squares summed in double);
    None where the kernel is not built or cannot take the network (native_ops) or x is not float32
    on the CPU. Networks go in calls of MARGIN_NETWORKS_PER_CALL over worker threads (the kernel
    releases the GIL); a network's norms do not depend on its chunk or thread."""
    lib = native.library()
    if x.device.type != "cpu" or x.dtype != torch.float32 or lib is None:
        return None
    plan = plan_conv(module)
    if plan is None or not plan.patches:
        return None
    params = {name: value.detach().contiguous() for name, value in parameters.items()}
    count = int(next(iter(params.values())).shape[0])
    if native_ops(plan, params, params, x.shape[1:]) is None:
        return None
    images = x.contiguous()
    norms = torch.empty(count, images.shape[0], dtype=torch.float64)

    def call(start, stop):
        piece = {name: value[start:stop] for name, value in params.items()}
        ops = native_ops(plan, piece, piece, images.shape[1:])
        return lib.bs_convnet_margin_norms(
            ops, len(ops), stop - start, images.shape[0], images.data_ptr(),
            norms[start:stop].data_ptr(),
        )  # fmt: skip

    return norms if in_network_calls(count, call, workers) else None  # None: not two logits


def in_network_calls(count: int, call, workers="auto") -> bool:
    """call(start, stop), a convnet.c entry point's status for networks start..stop, in calls of
    MARGIN_NETWORKS_PER_CALL networks over worker threads (the kernel releases the GIL): whether
    every call returned 0; -1 (memory ran out) raises MemoryError."""

    def run(part):
        status = call(*part)
        if status == -1:
            raise MemoryError("convnet.c could not allocate its activations")
        return status == 0

    size = MARGIN_NETWORKS_PER_CALL
    parts = [(start, min(start + size, count)) for start in range(0, count, size)]
    return all(spread(run, parts, cpu_threads(workers)))


def _run_native(ops, plan, params, grads, images, labels, steps, stepper, summed_loss):
    """_run_patches's steps with each network's forward and backward computed by convnet.c, one
    network and image at a time (engine/native.py; `ops`: native_ops of these tensors): the same
    model and loss, other roundings."""
    lib = native.library()
    classes = params[plan.ops[-1].weight].shape[1]
    count = steps[0].shape[0] if steps else 0
    if _fused_sgd(stepper, images):
        _run_native_sgd(lib, ops, images, labels, classes, steps, stepper)
        return

    def gradients(x, loss_gradient):
        batch = x.transpose(1, 2)  # [K, b, C, H, W]: each network's images, contiguous rows
        batch = batch if batch.is_contiguous() else batch.contiguous()
        loss_gradient = loss_gradient.contiguous()
        log_probs = torch.empty(loss_gradient.shape, dtype=torch.float32)
        status = lib.bs_convnet_gradients(
            ops, len(ops), count, batch.shape[1], batch.data_ptr(), loss_gradient.data_ptr(),
            log_probs.data_ptr(), classes,
        )  # fmt: skip
        if status != 0:
            raise MemoryError("convnet.c could not allocate its activations")
        return log_probs

    run_steps(gradients, images, labels, classes, steps, stepper, summed_loss, per_network=True)


FUSED_STEPS = 256  # steps per bs_convnet_sgd_steps call: a deadline is checked between calls
FUSED = True  # plain SGD's steps fused into convnet.c where they can be (steps_one_at_a_time)


@contextlib.contextmanager
def steps_one_at_a_time():
    """Plain SGD on the kernel a step at a time inside this block (as before bs_convnet_sgd_steps):
    how tests and benchmarks compare the two in one process."""
    global FUSED
    saved, FUSED = FUSED, False
    try:
        yield
    finally:
        FUSED = saved


def _fused_sgd(stepper, images: torch.Tensor) -> bool:
    """Whether the steps can run inside convnet.c with their updates (bs_convnet_sgd_steps): the
    optimizer is the written-out SGD without momentum or weight decay (its step is the update
    alone, no closure) and the kernel's update is torch's, bit for bit, on this machine."""
    optimizer = getattr(stepper, "optimizer", None)
    return (
        FUSED and isinstance(optimizer, DirectSGD) and optimizer.momentum == 0
        and optimizer.weight_decay == 0 and not stepper.closure
        and images.dtype == torch.float32 and images.device.type == "cpu"
        and native.sgd_update_agrees()
    )  # fmt: skip


def _run_native_sgd(lib, ops, images, labels, classes, steps, stepper):
    """_run_native's steps and SGD updates inside convnet.c, each network all the steps of a
    call in one go: its weights and gradients stay in cache, and no Python runs per step
    (1.03-1.36x over LeNet widths, about 1.15x typically: docs/performance.md). The same bits as a
    step at a time: the same gradients (network_gradients), then the update DirectSGD makes
    (native.sgd_update_agrees)."""
    images = images.contiguous()
    tables = {}
    for start, stop, count, batch in step_runs(steps, lambda count, batch: FUSED_STEPS):
        if batch not in tables:
            tables[batch] = loss_gradient_table(labels, classes, batch, torch.float32).contiguous()
        index = torch.stack(steps[start:stop]).to(torch.int64).contiguous()  # [T, K, b]
        rates = stepper.take_steps(stop - start)
        alpha = torch.tensor([-rate for rate in rates], dtype=torch.float32)
        status = lib.bs_convnet_sgd_steps(
            ops, len(ops), count, batch, stop - start, images.data_ptr(), index.data_ptr(),
            tables[batch].data_ptr(), alpha.data_ptr(), classes,
        )  # fmt: skip
        if status != 0:
            raise MemoryError("convnet.c could not allocate its activations")
