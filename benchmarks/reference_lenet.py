"""The published way to train many LeNets at once, written plainly as the speed reference.

Peleg & Hein hold M LeNets in one module: every Conv2d and Linear layer is a grouped convolution
with M groups (group m is network m's layer; the Linear layers as 1x1 convolutions over the
flattened features), the mini-batch is repeated M times along the channels (so all networks share
one batch order), and autograd plus one torch.optim.SGD train the grouped weights. The loss is the
sum over networks of each network's mean cross-entropy, so every network gets the gradient it
would get alone. Layer sizes are those of benchsuite's built-in LeNet at the same width, with
biases (the reference code keeps them). Their per-epoch train/test evaluation is left out: this
times the SGD steps alone, which makes the reference faster, not slower.

Not used by the package; benchmarks/test_bench_lenet_training.py imports it.
"""

from __future__ import annotations

import math
from itertools import pairwise

import torch
import torch.nn.functional as F
from reference_training import relu_between
from torch import nn

from benchsuite.architectures.lenet import KERNEL, layer_sizes


class GroupedLeNets(nn.Module):
    """`models` LeNets (conv5-ReLU-pool2 twice, FC-ReLU twice, FC to 2) as grouped layers."""

    def __init__(self, models: int, input_shape=(1, 28, 28), width=1, generator=None):
        super().__init__()
        channels, side = input_shape[0], input_shape[1]
        conv1, conv2, fc1, fc2 = layer_sizes(width)
        self.models = models
        self.conv1 = nn.Conv2d(models * channels, models * conv1, KERNEL, groups=models)
        self.conv2 = nn.Conv2d(models * conv1, models * conv2, KERNEL, groups=models)
        spatial = ((side - KERNEL + 1) // 2 - KERNEL + 1) // 2
        sizes = (conv2 * spatial * spatial, fc1, fc2, 2)
        self.fcs = nn.ModuleList(
            nn.Conv2d(models * fan_in, models * fan_out, 1, groups=models)
            for fan_in, fan_out in pairwise(sizes)
        )
        with torch.no_grad():  # Kaiming-uniform weights (fan-in per network), zero biases
            for layer in (self.conv1, self.conv2, *self.fcs):
                fan_in = layer.weight[0].numel()
                bound = math.sqrt(6.0 / fan_in)
                layer.weight.uniform_(-bound, bound, generator=generator)
                layer.bias.zero_()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, C, H, W] -> logits [B, M, 2]: the batch repeated across the networks."""
        batch = images.shape[0]
        x = images.repeat(1, self.models, 1, 1)
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = x.reshape(batch, -1, 1, 1)  # network m's features are channels m*F .. (m+1)*F
        return relu_between(self.fcs, x).view(batch, self.models, -1)
