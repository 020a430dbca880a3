"""Input gradients of the margin f1 - f0 of a plain sequential ReLU network, one network at a time,
by a written-out backward pass.

Why: convolution backward was 59% of the vmapped gradient of a LeNet (w=2/6), and autograd's input
gradient of the first convolution (one input channel) is oneDNN's slowest kernel here: 50 ms for
512 images of one network, against 4 ms for its forward. Written out, that gradient is a "full"
convolution of the padded output gradient with the flipped kernel, run as one depthwise
convolution (2.5 ms); convolutions of more input channels take the dense full convolution or
conv_transpose2d, autograd's own kernel. The first convolution's forward runs for 8 networks at
once (their input is shared: one ordinary convolution). Everything else is the backward autograd
would run (ReLU masks, max-pool indices of the same forward, matmuls), so the
gradients equal autograd's up to float32 summation order in the first convolution.

It pays where a convolution comes first (`faster`); an MLP's matmuls batch well under vmap
(one network at a time took twice vmap's time: benchmarks/lipschitz_speed.py's figures).

Only nn.Sequential stacks of Conv2d (stride 1, no padding/dilation/groups), ReLU, MaxPool2d
(non-overlapping windows) and Flatten, Linear ending in two logits qualify (the LeNet family and
the MLP); `plan` returns None for anything else, and the caller keeps its general path.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

FULL_CONVOLUTION_CHANNELS = 2  # input channels up to which the full convolution is the faster


def plan(module: nn.Module) -> list[tuple[str, nn.Module]] | None:
    """(name, layer) of a module this backward handles, or None."""
    if type(module) is not nn.Sequential or len(module) == 0:
        return None
    layers = list(module.named_children())
    for _, layer in layers:
        if not _supported(layer):
            return None
    last = layers[-1][1]
    if not isinstance(last, nn.Linear) or last.out_features != 2:
        return None
    return layers


def faster(layers: list[tuple[str, nn.Module]]) -> bool:
    """Whether this path beats vmap for a planned module: one that starts with a convolution."""
    return isinstance(layers[0][1], nn.Conv2d)


def _supported(layer: nn.Module) -> bool:
    if type(layer) is nn.Conv2d:
        return (
            layer.stride == (1, 1) and layer.padding == (0, 0) and layer.dilation == (1, 1)
            and layer.groups == 1 and layer.padding_mode == "zeros"
        )  # fmt: skip
    if type(layer) is nn.MaxPool2d:
        kernel, stride = _pair(layer.kernel_size), _pair(layer.stride or layer.kernel_size)
        return (
            kernel == stride and _pair(layer.padding) == (0, 0) and _pair(layer.dilation) == (1, 1)
            and not layer.ceil_mode and not layer.return_indices
        )  # fmt: skip
    if type(layer) is nn.Flatten:
        return layer.start_dim == 1 and layer.end_dim == -1
    return type(layer) in (nn.ReLU, nn.Linear)


def _pair(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


@torch.no_grad()
def first_convolutions(
    layers: list[tuple[str, nn.Module]], parameters: Mapping[str, torch.Tensor], x: torch.Tensor
) -> list[torch.Tensor] | None:
    """The first layer's output of every stacked network on x, when it is a convolution: one
    ordinary convolution with the networks' kernels side by side (the input is shared), cheaper
    than one small convolution per network; None when the first layer is something else."""
    name, layer = layers[0]
    if not isinstance(layer, nn.Conv2d):
        return None
    weight = parameters[f"{name}.weight"]
    count, channels = weight.shape[:2]
    bias = parameters.get(f"{name}.bias")
    stacked = F.conv2d(
        x, weight.flatten(0, 1), None if bias is None else bias.flatten(), groups=1
    )  # [B, count * channels, H', W']
    return list(stacked.unflatten(1, (count, channels)).unbind(1))


@torch.no_grad()
def margin_gradient_norms(
    layers: list[tuple[str, nn.Module]],
    parameters: Mapping[str, torch.Tensor],
    x: torch.Tensor,
    first: torch.Tensor | None = None,
) -> torch.Tensor:
    """||d(f1 - f0)/dx||_2 per image of one network (parameters without the stack axis): [B], in
    the float64 of the float32 gradient's norm. `first`: the first convolution's output on x,
    when computed already (first_convolutions)."""
    saved, h = [], x
    for position, (name, layer) in enumerate(layers):  # forward, keeping what the backward needs
        if isinstance(layer, nn.Conv2d):
            saved.append(h.shape)
            if position == 0 and first is not None:
                h = first
            else:
                h = F.conv2d(h, parameters[f"{name}.weight"], parameters.get(f"{name}.bias"))
        elif isinstance(layer, nn.Linear):
            h = F.linear(h, parameters[f"{name}.weight"], parameters.get(f"{name}.bias"))
        elif isinstance(layer, nn.ReLU):
            if _pools_next(layers, position):
                saved.append(None)  # applied after the pooling, on 1/4 of the values
                continue
            h = torch.relu(h)
            saved.append(h)
        elif isinstance(layer, nn.MaxPool2d):
            kernel = _pair(layer.kernel_size)
            pooled, indices = F.max_pool2d(h, kernel, kernel, return_indices=True)
            after_relu = torch.relu(pooled) if _pools_next(layers, position - 1) else None
            saved.append((h.shape, indices, after_relu))
            h = pooled if after_relu is None else after_relu
        else:  # Flatten
            saved.append(h.shape)
            h = h.flatten(1)
    gradient = torch.tensor([-1.0, 1.0], dtype=h.dtype, device=h.device).expand_as(h)
    for name, layer in reversed(layers):
        if isinstance(layer, nn.Linear):
            gradient = gradient.matmul(parameters[f"{name}.weight"])
            continue
        record = saved.pop()
        if isinstance(layer, nn.ReLU):
            if record is not None:  # else applied with the pooling
                gradient = torch.ops.aten.threshold_backward(gradient, record, 0)
        elif isinstance(layer, nn.MaxPool2d):
            shape, indices, after_relu = record
            if after_relu is not None:
                gradient = torch.ops.aten.threshold_backward(gradient, after_relu, 0)
            kernel = _pair(layer.kernel_size)
            gradient = F.max_unpool2d(gradient, indices, kernel, kernel, output_size=shape[-2:])
        elif isinstance(layer, nn.Flatten):
            gradient = gradient.reshape(record)
        else:
            gradient = _convolution_input_gradient(gradient, parameters[f"{name}.weight"])
    return gradient.flatten(1).norm(dim=1).double()


def _pools_next(layers, position: int) -> bool:
    """Whether layer `position` is a ReLU that a max-pool follows: then ReLU runs after the pooling (they commute, and
    the pool picks the same window position: ReLU leaves the positive values, the only ones whose
    position carries a gradient)."""
    return (
        0 <= position < len(layers) - 1
        and isinstance(layers[position][1], nn.ReLU)
        and isinstance(layers[position + 1][1], nn.MaxPool2d)
    )


def _convolution_input_gradient(gradient: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """d/d(input) of a stride-1 unpadded convolution, given d/d(output): the fastest of three
    equal forms for the number of input channels (conv_transpose2d is autograd's own)."""
    in_channels = weight.shape[1]
    if in_channels > FULL_CONVOLUTION_CHANNELS:
        return F.conv_transpose2d(gradient, weight)
    full = (weight.shape[2] - 1, weight.shape[3] - 1)  # padding that makes it a full convolution
    if in_channels > 1:
        return F.conv2d(gradient, weight.flip(2, 3).transpose(0, 1), padding=full)
    return _depthwise_full_convolution(gradient, weight, full)


def _depthwise_full_convolution(gradient: torch.Tensor, weight: torch.Tensor, full) -> torch.Tensor:
    """The full convolution onto one input channel as one depthwise convolution, a channel per
    (image, output channel) of the gradient, summed over the output channels: oneDNN runs it
    2.4-2.9x faster than the dense one with so few channels (not with 2+ input channels)."""
    batch, channels = gradient.shape[:2]
    kernels = weight.flip(2, 3).repeat(batch, 1, 1, 1)  # [batch * channels, 1, kh, kw]
    spread = F.conv2d(
        gradient.reshape(1, batch * channels, *gradient.shape[2:]),
        kernels,
        padding=full,
        groups=batch * channels,
    )
    return spread.view(batch, channels, *spread.shape[2:]).sum(1, keepdim=True)
