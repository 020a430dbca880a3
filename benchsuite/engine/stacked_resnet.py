"""Hand-written forward and backward of many stacked BatchNorm ResNets (ResNet4 and its depths).

Why by hand: the generic path (torch.func.vmap of functional_call plus autograd) spends a ResNet4
step at batch size 2 in oneDNN's grouped convolutions (forward and backward about 40% of it,
slow for a few channels per group), in vmap's BatchNorm (`var`, `mean`, a dozen elementwise
kernels each with its own layout moves) and in autograd's bookkeeping. Here, as in
engine/stacked_conv.py for the LeNet family, each network draws its own batch and keeps its
activations as [K, C, b, H, W]: a padded convolution is one zero-pad, one im2col copy and one
bmm of the stacked kernels [K, C_out, C*kh*kw] with the patches [K, C*kh*kw, b*H*W] (its input
gradient the convolution of the output gradient with the flipped kernels); BatchNorm in train mode is written
out per network over its own batch (mean, biased variance, the standard backward) and updates
the running statistics exactly as benchsuite.batchnorm.StackableBatchNorm2d does (momentum or
cumulative average, unbiased running_var, num_batches_tracked); ReLU, max pools, the residual
adds, the global max pool, the Linear head and the output scale act on all networks at once.
Gradients go into one flat buffer stepped by the written-out SGD/Adam (engine/stacked_optim.py).
Measured (docs/performance.md): 1.4-1.9x the vmap path, about the reference code's speed; the
im2col copies bound it (the patches are 9x the activation).

Exactness (tests/test_stacked_resnet.py): every kernel computes each network by itself (bmm,
reductions over each network's own rows, elementwise ops), so a network trained in a stack
equals it trained alone, bit for bit, parameters and BatchNorm buffers. Against the vmap path
(oneDNN's convolutions and vmap's reductions sum in other orders): equal to float32 rounding.

Where engine/native.py's kernels are built (float32 on the CPU), convnet.c's bs_resnet_gradients
computes each network's forward and backward instead, in cache, a batch at a time op by op
(BatchNorm needs its whole batch): 1.1-2.4x the torch formulation (docs/performance.md); the
running statistics are still updated here, from the batch moments it returns. The same
guarantees (tests/test_resnet_kernel.py), other roundings (numerics revision 12).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from benchsuite.engine import native
from benchsuite.engine.divergence import note_blown_up
from benchsuite.engine.stacked_conv import NativeOp, in_network_calls, run_steps
from benchsuite.engine.stacked_mlp import stacked_stepper
from benchsuite.errors import OptimizerStepError

# The ResNet4 modules matched by class (the engine may not import benchsuite.architectures).
_ARCHITECTURE = "benchsuite.architectures.resnet4"


@dataclass(frozen=True)
class Op:
    kind: str  # "conv", "bn", "relu", "pool", "residual", "globalmax", "linear", "scale"
    weight: str | None = None  # conv, linear, bn: the parameter names
    bias: str | None = None
    prefix: str = ""  # bn: where its buffers live (prefix + "running_mean", ...)
    options: tuple = ()  # conv: (kh, kw, padding); pool: max_pool2d options; bn: (eps, momentum,
    # unbiased running variance); scale: (factor,)
    body: tuple = ()  # residual: the ops of its body


@dataclass(frozen=True)
class ResNetPlan:
    """The module as image-stage ops on [K, C, b, H, W], a global max pool, then the head."""

    ops: tuple[Op, ...]


def _pair(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (int(value), int(value))


def _from_architecture(child: nn.Module, name: str) -> bool:
    kind = type(child)
    return kind.__name__ == name and kind.__module__ == _ARCHITECTURE


def _image_ops(module: nn.Module, prefix: str) -> list[Op] | None:
    """Ops of a (nested) Sequential of the image stage, or None for anything it cannot compute."""
    ops = []
    for name, child in module.named_children():
        path = f"{prefix}{name}."
        kind = type(child)
        if kind is nn.Sequential:
            inner = _image_ops(child, path)
            if inner is None:
                return None
            ops.extend(inner)
        elif kind is nn.Conv2d:
            padding = child.padding
            if (
                child.groups != 1
                or child.padding_mode != "zeros"
                or isinstance(padding, str)
                or _pair(child.stride) != (1, 1)
                or _pair(child.dilation) != (1, 1)
                or padding[0] != padding[1]
                or child.kernel_size[0] != child.kernel_size[1]
                or padding[0] > child.kernel_size[0] - 1
            ):
                return None
            kh, kw = child.kernel_size
            bias = f"{path}bias" if child.bias is not None else None
            ops.append(Op("conv", f"{path}weight", bias, options=(kh, kw, padding[0])))
        elif isinstance(child, _BatchNorm) and isinstance(child, nn.BatchNorm2d):
            if not (child.affine and child.track_running_stats):
                return None
            momentum = child.momentum
            unbiased = bool(getattr(child, "unbiased_running_var", True))
            options = (float(child.eps), None if momentum is None else float(momentum), unbiased)
            ops.append(Op("bn", f"{path}weight", f"{path}bias", path, options))
        elif kind is nn.ReLU:
            ops.append(Op("relu"))
        elif kind is nn.MaxPool2d:
            if child.return_indices:
                return None
            kernel = _pair(child.kernel_size)
            stride = _pair(child.stride if child.stride is not None else kernel)
            options = (kernel, stride, _pair(child.padding), _pair(child.dilation), child.ceil_mode)
            ops.append(Op("pool", options=options))
        elif _from_architecture(child, "Residual"):
            body = _image_ops(child.body, f"{path}body.")
            if not body:
                return None
            ops.append(Op("residual", body=tuple(body)))
        elif kind is nn.Identity:
            continue
        else:
            return None
    return ops


def plan_resnet(module: nn.Module) -> ResNetPlan | None:
    """The ResNetPlan of `module`, or None: a Sequential whose image stage (nested Sequentials of
    Conv2d with unit stride and zero padding, BatchNorm2d in train mode with running statistics,
    ReLU, MaxPool2d, resnet4.Residual) starts with a Conv2d and holds a BatchNorm, followed by
    resnet4.GlobalMaxPool, one Linear and an optional resnet4.Scale (ResNet4 at every depth)."""
    if type(module) is not nn.Sequential:
        return None
    children = list(module.named_children())
    tail = []
    while children and (
        _from_architecture(children[-1][1], "Scale") or type(children[-1][1]) is nn.Linear
    ):
        tail.insert(0, children.pop())
    if not children or not _from_architecture(children[-1][1], "GlobalMaxPool"):
        return None
    children.pop()
    kinds = [type(child) is nn.Linear for _, child in tail]
    if kinds not in ([True], [True, False]):
        return None
    stage = nn.Sequential()
    for name, child in children:
        stage.add_module(name, child)
    ops = _image_ops(stage, "")
    if not ops or ops[0].kind != "conv" or not any(_holds(op, "bn") for op in ops):
        return None
    head = [Op("globalmax")]
    for name, child in tail:
        if type(child) is nn.Linear:
            bias = f"{name}.bias" if child.bias is not None else None
            head.append(Op("linear", f"{name}.weight", bias))
        else:
            head.append(Op("scale", options=(float(child.factor),)))
    return ResNetPlan(tuple(ops + head))


def _classes(plan: ResNetPlan, params) -> int:
    """The logits the plan's head gives: its last Linear's outputs."""
    return params[[op for op in plan.ops if op.kind == "linear"][-1].weight].shape[1]


def _holds(op: Op, kind: str) -> bool:
    return op.kind == kind or any(_holds(inner, kind) for inner in op.body)


def train_stacked_resnet(
    plan: ResNetPlan,
    images: torch.Tensor,
    labels: torch.Tensor,
    parameters: dict[str, torch.Tensor],
    buffers: dict[str, torch.Tensor],
    steps: list[torch.Tensor],
    make_optimizer,
    flat_optimizer: bool = False,
    direct=None,
    make_stepper=None,
    summed_loss: bool = False,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Train K stacked networks: at step t network k takes one step on images[steps[t][k]].

    The arguments are those of stacked_conv.train_stacked_conv, plus the stacked BatchNorm
    buffers (not modified). Returns the trained (parameters, buffers): parameters as views into
    one buffer, the buffers with the running statistics of every train-mode forward (the
    closure's too, as on the vmap path).
    """
    state = {name: value.clone() for name, value in buffers.items()}
    flat, params, grads, stepper = stacked_stepper(
        parameters, make_optimizer, flat_optimizer, direct, make_stepper
    )
    try:
        stepper.start()
        kernel = native_resnet_ops(plan, params, grads, images)
        run = functools.partial(_run_native, kernel) if kernel is not None else _run
        run(plan, params, grads, state, images, labels, steps, stepper, summed_loss)
        stepper.finish()
    except OptimizerStepError as error:  # which networks were NaN or inf (the numerics rule)
        note_blown_up(error, [*params.values(), *grads.values()], stepper)
        raise
    finally:
        flat.grad = None
        for value in params.values():
            value.grad = None
    return params, state


# ---------------------------------------------------------------------------------------------
# The pieces: each takes and gives [K, C, b, H, W] (the head: [K, b, F])


def _patches(x: torch.Tensor, kh: int, kw: int, padding: int) -> torch.Tensor:
    """[K, C, b, H, W] -> zero-padded patches [K, C*kh*kw, b*Ho*Wo], rows in (c, i, j) order."""
    if padding:
        x = F.pad(x, (padding, padding, padding, padding))
    count, channels, batch, height, width = x.shape
    rows, cols = height - kh + 1, width - kw + 1
    windows = x.unfold(3, kh, 1).unfold(4, kw, 1)  # [K, C, b, Ho, Wo, kh, kw]
    return windows.permute(0, 1, 5, 6, 2, 3, 4).reshape(count, channels * kh * kw, batch * rows * cols)


def _input_gradient(grad: torch.Tensor, flipped: torch.Tensor, kh: int, kw: int, padding: int, shape):
    """A stride-1 convolution's input gradient as the convolution of the output gradient
    [K, C_out, b, Ho, Wo] with the flipped, transposed kernels [K, C, C_out*kh*kw] (one pad, one
    im2col copy and one bmm: the 9 strided col2im adds it replaces moved twice the memory)."""
    patches = _patches(grad, kh, kw, kh - 1 - padding)
    return torch.bmm(flipped, patches).view(shape)


def _bn_forward(op: Op, x, params, state):
    """Train-mode BatchNorm of each network over its own batch; running statistics updated as
    StackableBatchNorm2d updates them. Returns (y, normalized x, 1/sqrt(var + eps)) [K, C, 1, 1, 1].
    Two-pass moments (mean, then the mean square of the centred values): torch.var_mean's
    Welford pass cost 8x as much here."""
    eps, momentum, unbiased = op.options
    count, channels = x.shape[:2]
    rows = x.reshape(count, channels, -1)  # [K, C, n]
    n = rows.shape[2]
    mean = rows.mean(2)  # [K, C]
    centered = rows - mean.unsqueeze(2)
    var = torch.mul(centered, centered).mean(2)
    _update_running_statistics(op, state, mean, var, n, momentum, unbiased)
    shape = (count, channels, 1, 1, 1)
    invstd = torch.rsqrt(var.add_(eps)).view(shape)
    normalized = centered.view(x.shape).mul_(invstd)
    y = torch.addcmul(params[op.bias].view(shape), normalized, params[op.weight].view(shape))
    return y, normalized, invstd


def _update_running_statistics(op: Op, state, mean, var, n: int, momentum, unbiased: bool):
    """In place on the stacked buffers, op for op as StackableBatchNorm2d on one network."""
    prefix = op.prefix
    running_mean, running_var = state[f"{prefix}running_mean"], state[f"{prefix}running_var"]
    tracked = state[f"{prefix}num_batches_tracked"]
    if unbiased:
        var = var * (n / max(n - 1, 1))
    tracked.add_(1)
    if momentum == 1.0:
        running_mean.copy_(mean)
        running_var.copy_(var)
        return
    if momentum is None:  # cumulative moving average, per network
        factor = (1.0 / tracked.to(mean.dtype)).unsqueeze(1)
    else:
        factor = momentum
    running_mean.mul_(1 - factor).add_(mean * factor)
    running_var.mul_(1 - factor).add_(var * factor)


def _bn_backward(op: Op, grad, normalized, invstd, params, grads):
    """BatchNorm's train-mode backward per network: weight and bias gradients into `grads`, the
    input gradient returned: γ·invstd·(g − Σg/n − x̂·Σ(g·x̂)/n), as two fused passes."""
    count, channels = grad.shape[:2]
    n = grad[0, 0].numel()
    grad_bias = grads[op.bias]
    grad_weight = grads[op.weight]
    torch.sum(grad, (2, 3, 4), out=grad_bias)
    torch.sum(grad * normalized, (2, 3, 4), out=grad_weight)
    shape = (count, channels, 1, 1, 1)
    scale = params[op.weight].view(shape) * invstd  # γ / σ
    shift = (grad_bias / n).view(shape).mul(scale).neg_()
    slope = (grad_weight / n).view(shape).mul(scale).neg_()
    return torch.addcmul(shift, grad, scale).addcmul_(normalized, slope)


TILING_POOL = ((2, 2), (2, 2), (0, 0), (1, 1), False)  # MaxPool2d(2): tiling_pool_forward


def tiling_pool_forward(x):
    """MaxPool2d(2) on [K, C, b, H, W] as the maximum of its four strided quarters (aten's
    max_pool2d_with_indices took 7x as long on these planes)."""
    rows, cols = x.shape[3] // 2 * 2, x.shape[4] // 2 * 2
    quarters = [x[..., i:rows:2, j:cols:2] for i in (0, 1) for j in (0, 1)]
    return torch.maximum(torch.maximum(quarters[0], quarters[1]), torch.maximum(quarters[2], quarters[3]))


def tiling_pool_backward(grad, x, pooled):
    """The gradient to the first maximum of each window in row-major order, as aten's
    max_pool2d routes it (ties go to the earliest), zeros elsewhere."""
    rows, cols = x.shape[3] // 2 * 2, x.shape[4] // 2 * 2
    out = torch.zeros(x.shape, dtype=grad.dtype, device=grad.device)
    zero = torch.zeros((), dtype=grad.dtype, device=grad.device)
    taken = None
    for i, j in ((0, 0), (0, 1), (1, 0), (1, 1)):
        source = x[..., i:rows:2, j:cols:2]
        chosen = source == pooled
        if taken is None:
            taken = chosen
        elif (i, j) != (1, 1):
            chosen = chosen.logical_and_(taken.logical_not())
            taken = taken.logical_or(chosen)
        else:
            chosen = taken.logical_not()
        torch.where(chosen, grad, zero, out=out[..., i:rows:2, j:cols:2])
    return out


def _global_max_backward(grad, x, maxima):
    """amax's backward as autograd computes it: the gradient shared by the tied maxima."""
    mask = x == maxima.unsqueeze(-1).unsqueeze(-1)
    share = grad / mask.sum((3, 4))
    return mask * share.unsqueeze(-1).unsqueeze(-1)


# ---------------------------------------------------------------------------------------------
# One round


def _run(plan, params, grads, state, images, labels, steps, stepper, summed_loss):
    classes = _classes(plan, params)
    kernels, transposed = {}, {}

    def index(ops):
        for op in ops:
            if op.kind == "conv":
                w = params[op.weight]
                kernels[op.weight] = w.view(w.shape[0], w.shape[1], -1)
                transposed[op.weight] = kernels[op.weight].transpose(1, 2)
            elif op.kind == "linear":
                transposed[op.weight] = params[op.weight].transpose(1, 2)
            index(op.body)

    index(plan.ops)
    threshold_backward = torch.ops.aten.threshold_backward
    pool_forward = torch.ops.aten.max_pool2d_with_indices
    pool_backward = torch.ops.aten.max_pool2d_with_indices_backward

    def forward(ops, h, tape, first, owned):
        """Runs `ops` on h, appending what each backward needs to `tape`; returns the output.
        owned: whether h may be overwritten (not the images, not a residual's input)."""
        for op in ops:
            kind = op.kind
            if kind == "conv":
                kh, kw, padding = op.options
                patches = _patches(h, kh, kw, padding)
                tape.append((patches, h.shape, first))
                first = False
                count, _, batch, height, width = h.shape
                rows, cols = height + 2 * padding - kh + 1, width + 2 * padding - kw + 1
                if op.bias is None:
                    h = torch.bmm(kernels[op.weight], patches)
                else:
                    bias = params[op.bias].unsqueeze(2)
                    h = torch.baddbmm(bias, kernels[op.weight], patches)
                h = h.view(count, -1, batch, rows, cols)
            elif kind == "bn":
                h, normalized, invstd = _bn_forward(op, h, params, state)
                tape.append((normalized, invstd))
            elif kind == "relu":
                h = h.relu_() if owned else torch.relu(h)
                tape.append(h)
            elif kind == "pool" and op.options == TILING_POOL:
                pooled = tiling_pool_forward(h)
                tape.append((h, pooled))
                h = pooled
            elif kind == "pool":
                shape = h.shape
                pooled, indices = pool_forward(h.flatten(0, 1), *op.options)
                tape.append((h, indices))
                h = pooled.view(*shape[:3], *pooled.shape[2:])
            elif kind == "residual":
                inner = []
                h = h + forward(op.body, h, inner, first, False)
                tape.append(inner)
            elif kind == "globalmax":
                maxima = h.amax((3, 4))  # [K, C, b]
                tape.append((h, maxima))
                h = maxima.transpose(1, 2)  # [K, b, C]
            elif kind == "linear":
                tape.append(h)
                if op.bias is None:
                    h = torch.bmm(h, transposed[op.weight])
                else:
                    h = torch.baddbmm(params[op.bias].unsqueeze(1), h, transposed[op.weight])
            else:  # scale
                h = h * op.options[0]
                tape.append(None)
            owned = True  # every op above leaves a tensor of its own
        return h

    def backward(ops, grad, tape):
        for op, saved in zip(reversed(ops), reversed(tape)):
            kind = op.kind
            if kind == "conv":
                patches, shape, first = saved
                flat = grad.reshape(shape[0], grad.shape[1], -1)  # [K, C_out, b*Ho*Wo]
                w = params[op.weight]
                torch.bmm(flat, patches.transpose(1, 2), out=grads[op.weight].view(w.shape[0], w.shape[1], -1))
                if op.bias is not None:
                    torch.sum(flat, 2, out=grads[op.bias])
                if first:
                    return None
                kh, kw, padding = op.options
                flipped = w.flip(3, 4).transpose(1, 2).reshape(w.shape[0], w.shape[2], -1)
                grad = _input_gradient(grad, flipped, kh, kw, padding, shape)
            elif kind == "bn":
                normalized, invstd = saved
                grad = _bn_backward(op, grad, normalized, invstd, params, grads)
            elif kind == "relu":
                grad = threshold_backward(grad, saved, 0)
            elif kind == "pool" and op.options == TILING_POOL:
                grad = tiling_pool_backward(grad, *saved)
            elif kind == "pool":
                source, indices = saved
                grad = pool_backward(
                    grad.flatten(0, 1), source.flatten(0, 1), *op.options, indices
                ).view(source.shape)
            elif kind == "residual":
                inner = backward(op.body, grad, saved)
                grad = grad + inner if inner is not None else grad
            elif kind == "globalmax":
                source, maxima = saved
                grad = _global_max_backward(grad.transpose(1, 2), source, maxima)
            elif kind == "linear":
                torch.bmm(grad.transpose(1, 2), saved, out=grads[op.weight])
                if op.bias is not None:
                    torch.sum(grad, 1, out=grads[op.bias])
                grad = torch.bmm(grad, params[op.weight])
            else:  # scale
                grad = grad * op.options[0]
        return grad

    def gradients(x, loss_gradient):
        """Forward (running statistics updated) and backward of one step at the current weights:
        gradients into `grads`. Returns the log-probabilities [K, b, classes]."""
        tape = []
        logits = forward(plan.ops, x, tape, True, False)
        log_probs = torch._log_softmax(logits, -1, False)
        grad = torch._log_softmax_backward_data(loss_gradient, log_probs, -1, log_probs.dtype)
        backward(plan.ops, grad, tape)
        return log_probs

    run_steps(gradients, images, labels, classes, steps, stepper, summed_loss, per_network=True)


# ---------------------------------------------------------------------------------------------
# The compiled kernel (convnet.c's bs_resnet_gradients)

_KERNEL_KINDS = {"conv": 0, "pool": 1, "relu": 2, "linear": 3, "bn": 5, "globalmax": 8, "scale": 9}


@dataclass(frozen=True)
class NativeResNet:
    """A plan as convnet.c's ops over given stacked tensors: `ops` the ctypes array, `norms` each
    BatchNorm's (Op, channels, positions per image) in order, `moments` floats per network."""

    ops: object
    norms: tuple
    moments: int


def native_resnet_ops(
    plan: ResNetPlan, params, grads, images: torch.Tensor, frozen=None
) -> NativeResNet | None:
    """`plan` for bs_resnet_gradients, or None where the kernel is not built (engine/native.py) or
    cannot take it: float32 CPU tensors whose networks are contiguous rows, MaxPool2d(2) pools.
    frozen: eval mode, each BatchNorm as ([mean, invstd], [gamma, beta]), each [K, 2C], given for
    its weight's name (bs_resnet_margin_norms)."""
    if native.library() is None or images.dtype != torch.float32 or images.device.type != "cpu":
        return None
    names = [name for op in _flat(plan.ops) for name in (op.weight, op.bias) if name]
    tensors = [params[name] for name in names] + [grads[name] for name in names]
    if any(
        t.dtype != torch.float32 or t.device.type != "cpu" or not t.is_contiguous() for t in tensors
    ):
        return None
    ops, norms = [], []
    shape = [int(s) for s in images.shape[1:]]  # channels, height, width

    def weights(fields, op):
        for role, name in (("weight", op.weight), ("bias", op.bias)):
            if name:
                fields.update({
                    role: params[name].data_ptr(), f"grad_{role}": grads[name].data_ptr(),
                    f"{role}_stride": params[name][0].numel(),
                })  # fmt: skip

    def add(ops_of) -> bool:
        for op in ops_of:
            c, h, w = shape
            fields = {"kind": _KERNEL_KINDS.get(op.kind, -1), "cin": c, "h": h, "w": w}
            if op.kind == "conv":
                kh, kw, padding = op.options
                cout, cin = params[op.weight].shape[1:3]
                if cin != c:
                    return False
                if padding:
                    ops.append(NativeOp(kind=4, cin=c, h=h, w=w, kh=padding))
                    h, w = h + 2 * padding, w + 2 * padding
                    fields.update(h=h, w=w)
                fields.update(cout=cout, kh=kh, kw=kw)
                shape[:] = [cout, h - kh + 1, w - kw + 1]
            elif op.kind == "bn" and frozen is not None:
                statistics, affine = frozen[op.weight]
                fields.update(
                    kind=10, weight=statistics.data_ptr(), bias=affine.data_ptr(),
                    weight_stride=statistics[0].numel(), bias_stride=affine[0].numel(),
                )  # fmt: skip
                ops.append(NativeOp(**fields))
                continue
            elif op.kind == "bn":
                fields.update(cout=c, factor=op.options[0])
                norms.append((op, c, h * w))
            elif op.kind == "pool":
                if op.options != TILING_POOL:
                    return False
                shape[1:] = [h // 2, w // 2]
            elif op.kind == "residual":
                save = len(ops)
                ops.append(NativeOp(kind=6, cin=c, h=h, w=w))
                if not add(op.body) or shape != [c, h, w]:
                    return False
                fields.update(kind=7, kh=save)
            elif op.kind == "globalmax":
                shape[1:] = [1, 1]
            elif op.kind == "linear":
                cout, cin = params[op.weight].shape[1:3]
                if cin != c:
                    return False
                fields.update(cout=cout)
                shape[:] = [cout, 1, 1]
            elif op.kind == "scale":
                fields.update(factor=op.options[0])
            elif op.kind != "relu":
                return False
            weights(fields, op)
            ops.append(NativeOp(**fields))
        return True

    if not add(plan.ops):
        return None
    return NativeResNet((NativeOp * len(ops))(*ops), tuple(norms), sum(2 * c for _, c, _ in norms))


def _flat(ops):
    for op in ops:
        yield op
        yield from _flat(op.body)


def _run_native(
    kernel: NativeResNet, plan, params, grads, state, images, labels, steps, stepper, summed_loss
):
    """_run's steps with each network's forward and backward computed by convnet.c, a network at a
    time (bs_resnet_gradients): the same model, loss and running statistics, other roundings."""
    lib = native.library()
    classes = _classes(plan, params)
    count = steps[0].shape[0] if steps else 0

    def gradients(x, loss_gradient):
        batch = x.transpose(1, 2)  # [K, b, C, H, W]: each network's images, contiguous rows
        batch = batch if batch.is_contiguous() else batch.contiguous()
        loss_gradient = loss_gradient.contiguous()
        log_probs = torch.empty(loss_gradient.shape, dtype=torch.float32)
        moments = torch.empty(count, kernel.moments, dtype=torch.float32)
        status = lib.bs_resnet_gradients(
            kernel.ops, len(kernel.ops), count, batch.shape[1], batch.data_ptr(),
            loss_gradient.data_ptr(), log_probs.data_ptr(), classes, moments.data_ptr(),
            kernel.moments,
        )  # fmt: skip
        if status != 0:
            raise MemoryError("convnet.c could not allocate its activations")
        at = 0
        for op, channels, positions in kernel.norms:
            mean = moments[:, at : at + channels]
            var = moments[:, at + channels : at + 2 * channels]
            _, momentum, unbiased = op.options
            n = batch.shape[1] * positions
            _update_running_statistics(op, state, mean, var, n, momentum, unbiased)
            at += 2 * channels
        return log_probs

    run_steps(gradients, images, labels, classes, steps, stepper, summed_loss, per_network=True)


def _eval_mode(module: nn.Module, parameters, buffers, x: torch.Tensor):
    """(plan, parameters, frozen BatchNorms) for convnet.c's eval-mode calls, or None where the
    kernel is not built or cannot take the module or x (float32 on the CPU). A BatchNorm computes
    (x - running_mean) * rsqrt(running_var + eps) * weight + bias in StackableBatchNorm2d's order
    (its eval forward's bits)."""
    if native.library() is None or x.device.type != "cpu" or x.dtype != torch.float32:
        return None
    plan = plan_resnet(module)
    if plan is None:
        return None
    params = {name: value.detach().contiguous() for name, value in parameters.items()}
    frozen = {}
    for op in _flat(plan.ops):
        if op.kind == "bn":
            mean, var = buffers[f"{op.prefix}running_mean"], buffers[f"{op.prefix}running_var"]
            invstd = torch.rsqrt(var + op.options[0])
            frozen[op.weight] = (
                torch.cat([mean, invstd], 1).float().contiguous(),
                torch.cat([params[op.weight], params[op.bias]], 1).contiguous(),
            )
    if native_resnet_ops(plan, params, params, x, frozen) is None:
        return None
    return plan, params, frozen


def _by_networks(plan, params, frozen, images, call, workers) -> bool:
    """call(kernel, start, stop) with the ops of networks start..stop, over
    stacked_conv.in_network_calls's calls and threads; whether every call returned 0."""

    def on(start, stop):
        piece = {name: value[start:stop] for name, value in params.items()}
        pieces = {name: (s[start:stop], a[start:stop]) for name, (s, a) in frozen.items()}
        return call(native_resnet_ops(plan, piece, piece, images, pieces), start, stop)

    return in_network_calls(int(next(iter(params.values())).shape[0]), on, workers)


@torch.no_grad()
def native_resnet_margin_norms(
    module: nn.Module, parameters, buffers, x: torch.Tensor, workers="auto"
):
    """||d(f1 - f0)/dx||_2 of every stacked ResNet (eval mode: BatchNorm with its running
    statistics) at every image of x, [K, B] float64, by convnet.c's bs_resnet_margin_norms (each
    network at each image alone, the squares summed in double), or None where the kernel is not
    built or cannot take the module (_eval_mode); the backward sums in other orders than
    autograd's. A network's norms do not depend on its call or thread."""
    prepared = _eval_mode(module, parameters, buffers, x)
    if prepared is None:
        return None
    images, lib = x.contiguous(), native.library()
    count = len(next(iter(parameters.values())))
    norms = torch.empty(count, x.shape[0], dtype=torch.float64)

    def call(kernel, start, stop):
        return lib.bs_resnet_margin_norms(
            kernel.ops, len(kernel.ops), stop - start, images.shape[0], images.data_ptr(),
            norms[start:stop].data_ptr(),
        )  # fmt: skip

    return norms if _by_networks(*prepared, images, call, workers) else None  # None: not 2 logits


@torch.no_grad()
def native_resnet_logits(module: nn.Module, parameters, buffers, x: torch.Tensor, workers="auto"):
    """[K, B, classes] eval-mode logits of every stacked ResNet at every image of x by convnet.c's
    bs_resnet_logits (each network at each image alone; the test accuracy,
    engine/evaluation.py), or None where the kernel is not built or cannot take the module
    (_eval_mode). Equal to StackedForward's to float32 rounding (other summation orders); a
    network's logits do not depend on its call or thread."""
    prepared = _eval_mode(module, parameters, buffers, x)
    if prepared is None:
        return None
    plan, params, _ = prepared
    classes = _classes(plan, params)
    images, lib = x.contiguous(), native.library()
    out = torch.empty(len(next(iter(params.values()))), x.shape[0], classes, dtype=torch.float32)

    def call(kernel, start, stop):
        return lib.bs_resnet_logits(
            kernel.ops, len(kernel.ops), stop - start, images.shape[0], images.data_ptr(),
            out[start:stop].data_ptr(), classes,
        )  # fmt: skip

    return out if _by_networks(*prepared, images, call, workers) else None
