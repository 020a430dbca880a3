"""The published way to train many ResNet4s at once, written plainly as the speed reference.

Peleg & Hein's code holds M networks in one model: every 3x3 convolution is a Conv2d over M*C
channels with groups=M (group m is network m's layer), every BatchNorm one BatchNorm2d over M*C
channels (each network's channels normalized over the batch, momentum 0.1), the Linear head a
grouped 1x1 convolution; the mini-batch is repeated M times along the channels (so all networks
share one batch order); the loss is the sum over networks of each network's mean cross-entropy,
autograd computes the gradient and one torch.optim.SGD steps every weight. This re-creates that
approach for benchsuite's ResNet4 (architectures/resnet4.py: prep, layer1 + residual, layer2,
layer3 + residual, global max pool, Linear, x 0.125; depth variants drop layers after prep), so
both sides of the benchmark compute the same networks. Where the paper's code ends with a
MaxPool2d of the last feature map's size, this takes the global max, as benchsuite's ResNet4 does.

Not used by the package; benchmarks/test_bench_resnet_training.py imports it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

CHANNELS = {"prep": 6, "layer1": 12, "layer2": 24, "layer3": 48}
RESIDUAL = {"layer1": True, "layer2": False, "layer3": True}
DEPTHS = {1: ("layer3",), 2: ("layer2", "layer3"), 3: ("layer1", "layer2", "layer3")}


def grouped_conv_bn(models: int, c_in: int, c_out: int) -> nn.Sequential:
    """Conv3x3 (groups = M, no bias), BatchNorm2d over all M*c_out channels, in-place ReLU."""
    return nn.Sequential(
        nn.Conv2d(models * c_in, models * c_out, 3, padding=1, bias=False, groups=models),
        nn.BatchNorm2d(models * c_out, momentum=0.1),
        nn.ReLU(inplace=True),
    )


class GroupedResidual(nn.Module):
    def __init__(self, models: int, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            grouped_conv_bn(models, channels, channels), grouped_conv_bn(models, channels, channels)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class GroupedResNet4s(nn.Module):
    """`models` ResNet4s in one module, every layer grouped over the networks."""

    def __init__(
        self, models: int, in_channels: int = 1, width: float = 0.5, layers: int = 3,
        generator: torch.Generator | None = None,
    ):  # fmt: skip
        super().__init__()
        self.models = models
        channels = {name: int(base * width) for name, base in CHANNELS.items()}
        blocks = [grouped_conv_bn(models, in_channels, channels["prep"])]
        previous = channels["prep"]
        for name in DEPTHS[layers]:
            blocks += [grouped_conv_bn(models, previous, channels[name]), nn.MaxPool2d(2)]
            if RESIDUAL[name]:
                blocks.append(GroupedResidual(models, channels[name]))
            previous = channels[name]
        self.features = nn.Sequential(*blocks)
        self.linear = nn.Conv2d(models * previous, models * 2, 1, bias=False, groups=models)
        with torch.no_grad():  # Kaiming-uniform convolutions and head, fan-in per network
            for module in self.modules():
                if isinstance(module, nn.Conv2d):
                    fan_in = module.weight[0].numel()
                    bound = math.sqrt(6.0 / fan_in)
                    module.weight.uniform_(-bound, bound, generator=generator)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, C, H, W] -> logits [B, M, 2]: the batch repeated across the networks."""
        x = self.features(images.repeat(1, self.models, 1, 1))
        x = x.amax(dim=(-2, -1), keepdim=True)
        return (self.linear(x) * 0.125).view(images.shape[0], self.models, 2)
