"""Hand-written forward and backward of many stacked convolutional networks (the LeNet family).

Why by hand: the generic path (torch.func.vmap of functional_call plus autograd) spends a LeNet
step at batch size 2 in bookkeeping: vmap's layout moves, autograd's graph, a torch.optim call per
tensor. The arithmetic is few kernels. Here K networks keep their convolutional activations as
[b, K*C, H, W] (network k owns channels k*C..k*C+C-1), so each Conv2d is one convolution with
groups = K (the formulation vmap's batching rule also uses), pools, ReLUs and their backward act
on all networks at once, and the Linear layers after Flatten are batched matmuls as in
engine/stacked_mlp.py. Each network draws its own batch (batch_order "independent"): the
gathered images of step t are [b, K*C, H, W] with network k's own images in its channels.
Gradients go into one flat buffer, which the written-out SGD/Adam (engine/stacked_optim.py) steps
as one tensor. The first layer computes no input gradient.

Exactness (tests/test_training.py): ReLU, max-pool and their backward, the bias additions and
reductions, log-softmax and bmm compute each network by itself; the grouped convolution does not
promise it: oneDNN picks its algorithm by the group count, so a network's bits may depend on the
number of networks in its stack. For a fixed stack size the result is deterministic (one thread
per kernel, engine/threads.py), rounds are split into sub-stacks by size alone (engine/parts.py),
so the worker count never changes a bit. Against the vmap path and against a network trained
alone: equal to float32 rounding, with the same networks accepted on the test fixtures.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from benchsuite.engine.stacked_mlp import _loss_gradient_table, _PlainStepper, flat_views
from benchsuite.engine.stacked_optim import direct_optimizer

GATHER_BYTES = 4 * 2**20  # images and loss gradients gathered ahead, per chunk of steps


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
    return ConvPlan(tuple(ops))


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
) -> dict[str, torch.Tensor]:
    """Train K stacked networks: at step t network k takes one step on images[steps[t][k]].

    The arguments are those of stacked_mlp.train_stacked_mlp (images [N, C, H, W] in place of its
    features). Returns the trained stacked parameters (views into one buffer).
    """
    with torch.no_grad():
        flat, params = flat_views(parameters)
        flat_grad, grads = flat_views(parameters)
    if flat_optimizer:
        flat.grad = flat_grad
        optimizer = direct(flat) if direct is not None else None
        if optimizer is None:
            optimizer = make_optimizer([flat])
            optimizer = direct_optimizer(optimizer) or optimizer
    else:
        for name, value in params.items():
            value.grad = grads[name]
        optimizer = make_optimizer(list(params.values()))
    stepper = make_stepper(optimizer) if make_stepper is not None else _PlainStepper(optimizer)
    try:
        stepper.start()
        _run_steps(plan, params, grads, images, labels, steps, stepper, summed_loss)
        stepper.finish()
    finally:
        flat.grad = None
        for value in params.values():
            value.grad = None
    return params


def _gathered(images, labels, classes, steps):
    """Per step (images [b, K*C, H, W], loss gradients [K, b, classes]), gathered for a chunk of
    equally shaped steps at once (one index_select each per chunk)."""
    per_image = images[0].numel()
    tables = {}
    start = 0
    while start < len(steps):
        count, batch = steps[start].shape
        per_step = count * batch * (per_image + classes) * images.element_size()
        limit = max(1, GATHER_BYTES // max(1, per_step))
        stop = start + 1
        while stop < len(steps) and stop - start < limit and steps[stop].shape == (count, batch):
            stop += 1
        indices = torch.stack(steps[start:stop])  # [T, K, b]
        if batch not in tables:
            tables[batch] = _loss_gradient_table(labels, classes, batch, images.dtype)
        gathered = images.index_select(0, indices.transpose(1, 2).reshape(-1))
        gathered = gathered.view(stop - start, batch, count * images.shape[1], *images.shape[2:])
        gradients = tables[batch].index_select(0, indices.view(-1))
        gradients = gradients.view(stop - start, count, batch, classes)
        for s in range(stop - start):
            yield gathered[s], gradients[s]
        start = stop


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
                torch.bmm(grad.transpose(1, 2), inputs[position], out=grads[op.weight])
                if op.bias is not None:
                    torch.sum(grad, 1, out=grads[op.bias])
                grad = torch.bmm(grad, params[op.weight])
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

    with torch.no_grad():
        for x, loss_gradient in _gathered(images, labels, classes, steps):
            gradients(x, loss_gradient)
            if stepper.closure:
                stepper.step(_closure(gradients, x, loss_gradient, summed_loss))
            else:
                stepper.step()


def _closure(gradients, x, loss_gradient, summed):
    """The step's closure: the same batch at the current weights; each network's mean
    cross-entropy [K] (summed: their sum), as stacked_mlp's closure gives it."""

    def closure():
        with torch.no_grad():
            log_probs = gradients(x, loss_gradient)
            losses = torch.mul(loss_gradient, log_probs).sum(dim=(1, 2))
            return losses.sum() if summed else losses

    return closure
