"""BatchNorm for stacked networks, and the Guess & Check rule for its statistics.

1. StackableBatchNorm{1,2,3}d: nn.BatchNorm with the same parameters, buffers and semantics
   (running statistics with momentum, unbiased running_var, num_batches_tracked), written in plain
   tensor ops. Why: under torch.func.vmap with stacked (batched) buffers, the native CUDA kernel
   behind F.batch_norm can fail in train mode ("Expected input->is_contiguous(...)"; seen with
   resnet4 at w=1/6, whose first BatchNorm has one channel, any K >= 2, torch 2.11 on an H100):
   vmap's batching rule hands the kernel a non-contiguous tensor. The CPU path works, which hides
   the problem in CPU-only tests. Built-in architectures use these classes.

2. calibrate_batchnorm: protocol.md's "under G&C the BN statistics are those of the training set
   (one forward pass over it), then used at test time". It returns stacked buffers in which every
   network's running_mean / running_var are the mean and the *biased* variance of its BatchNorm
   inputs over the whole training set, i.e. exactly what train-mode normalization divides by, so
   that eval-mode logits on x_train equal train-mode logits on x_train (all N images as one
   batch). The unbiased variance PyTorch normally keeps would not reproduce train mode: it is
   larger by n / (n - 1), with n = N*H*W values per channel.

   Exactness on CUDA: the stackable eval path reproduces train mode bit for bit when the
   convolutions compute the same numbers; with TF32 convolutions (cudnn.allow_tf32, PyTorch's
   default) a different number of networks per call can pick a different algorithm and move
   logits by ~1e-3. Accept/reject decisions that must agree exactly should use the same chunking
   or disable TF32.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import nn
from torch.func import functional_call, vmap
from torch.nn.modules.batchnorm import _BatchNorm


def has_batchnorm(module: nn.Module) -> bool:
    """Whether any submodule is a BatchNorm layer (then G&C needs calibrate_batchnorm)."""
    return any(isinstance(m, _BatchNorm) for m in module.modules())


class _StackableBatchNorm:
    """The forward pass of nn.BatchNorm in tensor ops that vmap batches on every device.

    `unbiased_running_var=False` stores the biased batch variance (used by calibration).
    Only Python attributes steer control flow, never tensor values, so it is vmap-safe.
    """

    unbiased_running_var = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        if self.training or not self.track_running_stats:
            mean = x.mean(dim=dims)
            var = x.var(dim=dims, unbiased=False)
            if self.training and self.track_running_stats:
                self._update_running_statistics(
                    mean.detach(), var.detach(), x.numel() // x.shape[1]
                )
        else:
            mean, var = self.running_mean, self.running_var
        y = (x - mean.reshape(shape)) * torch.rsqrt(var.reshape(shape) + self.eps)
        if self.affine:
            y = y * self.weight.reshape(shape) + self.bias.reshape(shape)
        return y

    def _update_running_statistics(self, mean: torch.Tensor, var: torch.Tensor, n: int) -> None:
        """In place, as nn.BatchNorm does (vmap writes through to stacked buffers)."""
        if self.unbiased_running_var:
            var = var * (n / max(n - 1, 1))
        self.num_batches_tracked.add_(1)
        if self.momentum == 1.0:  # exact copy, whatever the old buffers held
            self.running_mean.copy_(mean)
            self.running_var.copy_(var)
            return
        if self.momentum is None:  # cumulative moving average
            factor = 1.0 / self.num_batches_tracked.to(mean.dtype)
        else:
            factor = self.momentum
        self.running_mean.mul_(1 - factor).add_(mean * factor)
        self.running_var.mul_(1 - factor).add_(var * factor)


class StackableBatchNorm1d(_StackableBatchNorm, nn.BatchNorm1d):
    """nn.BatchNorm1d that vmaps over stacked networks on CUDA too."""


class StackableBatchNorm2d(_StackableBatchNorm, nn.BatchNorm2d):
    """nn.BatchNorm2d that vmaps over stacked networks on CUDA too."""


class StackableBatchNorm3d(_StackableBatchNorm, nn.BatchNorm3d):
    """nn.BatchNorm3d that vmaps over stacked networks on CUDA too."""


_STACKABLE = (
    (nn.BatchNorm1d, StackableBatchNorm1d),
    (nn.BatchNorm2d, StackableBatchNorm2d),
    (nn.BatchNorm3d, StackableBatchNorm3d),
)


def stackable(layer: _BatchNorm) -> _BatchNorm:
    """A Stackable copy of one BatchNorm layer: same configuration, parameters and buffers."""
    if isinstance(layer, _StackableBatchNorm):
        return copy.deepcopy(layer)
    for native, replacement in _STACKABLE:
        if isinstance(layer, native):
            # The replacements add no state and keep nn.BatchNorm's, so switching the class of a
            # copy keeps every setting, device, dtype and buffer as it was.
            twin = copy.deepcopy(layer)
            twin.__class__ = replacement
            return twin
    raise TypeError(f"no stackable replacement for {type(layer).__name__}")


def make_stackable(module: nn.Module) -> nn.Module:
    """A copy of `module` with every BatchNorm replaced by its Stackable twin (same state names)."""
    twin = copy.deepcopy(module)
    for name, layer in list(twin.named_modules()):
        if isinstance(layer, _BatchNorm) and not isinstance(layer, _StackableBatchNorm):
            if name == "":
                return stackable(layer)
            twin.set_submodule(name, stackable(layer))
    return twin


def _calibration_copy(module: nn.Module) -> nn.Module:
    """Train-mode stackable copy whose BatchNorms store the batch mean and biased variance."""
    twin = make_stackable(module).train()
    for name, layer in twin.named_modules():
        if isinstance(layer, _BatchNorm):
            if not layer.track_running_stats:
                raise ValueError(f"BatchNorm {name!r} does not track running statistics")
            layer.momentum = 1.0
            layer.unbiased_running_var = False
    return twin


@torch.no_grad()
def calibrate_batchnorm(
    module: nn.Module,
    parameters: Mapping[str, torch.Tensor],
    buffers: Mapping[str, torch.Tensor],
    x_train: torch.Tensor,
    models_per_call: int = 256,
) -> dict[str, torch.Tensor]:
    """Stacked buffers (leading model axis K) holding each network's training-set BN statistics.

    `parameters`/`buffers` are stacked as in benchsuite.stacked; x_train is [N, C, H, W], shared
    by all networks and processed as ONE batch (the statistics are those of the whole set).
    The input buffers are not modified. Evaluate the returned buffers with the template in eval().
    One vmapped train-mode forward per chunk of `models_per_call` networks.
    """
    result = {name: value.clone() for name, value in buffers.items()}
    if not has_batchnorm(module):
        return result
    twin = _calibration_copy(module)

    def forward(p, b, x):
        return functional_call(twin, (p, b), (x,))

    count = next(iter(parameters.values())).shape[0]
    for start in range(0, count, models_per_call):
        stop = min(start + models_per_call, count)
        chunk_parameters = {k: v[start:stop] for k, v in parameters.items()}
        chunk_buffers = {k: v[start:stop].clone() for k, v in result.items()}
        # Updates chunk_buffers in place: running statistics := this batch's.
        vmap(forward, in_dims=(0, 0, None), randomness="different")(
            chunk_parameters, chunk_buffers, x_train
        )
        for k, v in chunk_buffers.items():
            result[k][start:stop] = v
    return result
