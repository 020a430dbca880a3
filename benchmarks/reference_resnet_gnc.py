"""The published Guess & Check approach for BatchNorm networks (ResNet4), written plainly.

Peleg & Hein's code (utils/model_utils.py: Resnet4 of grouped convolutions; train.py and
utils/train_utils.py: the "guess" optimizer) holds M networks in ONE model: the input is
repeated M times along the channels, every convolution is grouped (group g = network g), every
BatchNorm2d has M*C channels, the Linear layer is a grouped 1x1 convolution. Per chunk it
1. redraws every parameter in place with uniform_ (BatchNorm weight U(0.9, 1.1), bias
   U(-0.05, 0.05); here the conv/linear bounds of the suite's prior, for the same networks),
2. runs one forward in train mode with running statistics tracked (the "guess train" pass that
   sets the BatchNorm statistics from the training set),
3. runs a second forward in train mode with track_running_stats off (batch statistics of the N
   points) to compute the training accuracy, plus the per-network weight norms of
   forward_normalize_mult, and accepts the networks whose argmax is right on all N points.
The lean variant drops step 2 and the norms: one train-mode forward per chunk, which decides the
same networks. No output swap, no reuse. ResNet4 is benchsuite's (global max-pool at the end).
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from benchsuite.architectures.resnet4 import OUTPUT_SCALE, RESIDUAL, channel_sizes, parse_depth


class _GroupedConvBN(nn.Module):
    def __init__(self, c_in: int, c_out: int, m: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in * m, c_out * m, 3, padding=1, bias=False, groups=m)
        self.bn = nn.BatchNorm2d(c_out * m)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)), inplace=True)


class GroupedResNet4(nn.Module):
    """M ResNet4 networks as one module of grouped convolutions: logits [N, M, 2]."""

    def __init__(self, in_channels: int, width, m: int, depth="full"):
        super().__init__()
        self.m = m
        channels = channel_sizes(width)
        self.prep = _GroupedConvBN(in_channels, channels["prep"], m)
        self.layers = nn.ModuleList()
        self.residuals = nn.ModuleDict()
        previous = channels["prep"]
        self.kept = parse_depth(depth)
        for name in self.kept:
            out = channels[name]
            self.layers.append(_GroupedConvBN(previous, out, m))
            if RESIDUAL[name]:
                self.residuals[name] = nn.Sequential(
                    _GroupedConvBN(out, out, m), _GroupedConvBN(out, out, m)
                )
            previous = out
        self.linear = nn.Conv2d(previous * m, 2 * m, 1, bias=False, groups=m)

    def forward(self, x):
        h = self.prep(x.repeat(1, self.m, 1, 1))
        for name, layer in zip(self.kept, self.layers):
            h = F.max_pool2d(layer(h), 2)
            if name in self.residuals:
                h = h + self.residuals[name](h)
        h = h.amax(dim=(-2, -1), keepdim=True)
        return (self.linear(h) * OUTPUT_SCALE).reshape(x.shape[0], self.m, 2)

    @torch.no_grad()
    def reinitialize(self, prior) -> None:
        for name, p in self.named_parameters():
            if ".bn." in name or name.startswith("bn."):
                low, high = (0.9, 1.1) if name.endswith("weight") else (-0.05, 0.05)
                p.uniform_(low, high)
            else:
                fan_in = p.shape[1] * math.prod(p.shape[2:])
                bound = float(prior.scale(fan_in))
                p.uniform_(-bound, bound)

    def track_running_stats(self, on: bool) -> None:
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.track_running_stats = on


@torch.no_grad()
def reference_resnet_guess_and_check(model: GroupedResNet4, prior, x, y, chunks: int, lean=False):
    """Runs `chunks` chunks of model.m candidates; returns (candidates, accepted, seconds)."""
    model.train()
    accepted = 0
    start = time.perf_counter()
    for _ in range(chunks):
        model.reinitialize(prior)
        if not lean:
            model.track_running_stats(True)
            model(x)  # sets the running statistics from the training set
            model.track_running_stats(False)
        logits = model(x)  # [N, M, 2], batch statistics of the N points
        if not lean:
            norms = torch.ones(model.m)
            for name, p in model.named_parameters():
                if ".bn." not in name:
                    norms = norms * p.reshape(model.m, -1).norm(dim=1) / 3
            _ = logits / norms.reshape(1, -1, 1)
        right = logits.argmax(dim=-1) == y.reshape(-1, 1)
        accepted += int(right.all(dim=0).sum())
    return model.m * chunks, accepted, time.perf_counter() - start
