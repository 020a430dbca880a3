"""The published way to train many small networks at once, written plainly as the speed reference.

M networks are one model whose layers are grouped 1x1 convolutions (group m holds network m's
Linear layer); each mini-batch is repeated across the M networks (so all share one batch order);
autograd and one torch.optim.SGD over the grouped weights. This is the reference the benchmark
compares the engine against (issue 3: "SGD network-steps/s at least 2x the published
grouped-convolution approach").

Not used by the package; benchmarks/test_bench_training.py imports it.
"""

from __future__ import annotations

import math
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn

PAPER_MLP_SIZES = (196, 120, 60, 30, 12, 2)  # width 1 on 28x28 inputs after a 2x2 max-pool


class GroupedConvolutionMLPs(nn.Module):
    """`models` bias-free ReLU MLPs in one module: layer l is Conv2d(M*in, M*out, 1, groups=M)."""

    def __init__(
        self, models: int, sizes=PAPER_MLP_SIZES, generator: torch.Generator | None = None
    ):
        super().__init__()
        self.models = models
        self.layers = nn.ModuleList(
            nn.Conv2d(models * fan_in, models * fan_out, kernel_size=1, groups=models, bias=False)
            for fan_in, fan_out in pairwise(sizes)
        )
        with torch.no_grad():  # the protocol's Kaiming-uniform init, fan-in per network
            for layer, fan_in in zip(self.layers, sizes[:-1]):
                bound = math.sqrt(6.0 / fan_in)
                layer.weight.uniform_(-bound, bound, generator=generator)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 1, 28, 28] -> logits [B, M, 2]: the batch repeated across the networks."""
        batch = images.shape[0]
        x = F.max_pool2d(images, 2).flatten(1)
        x = x.repeat(1, self.models).view(batch, -1, 1, 1)
        return relu_between(self.layers, x).view(batch, self.models, -1)


def relu_between(layers, x: torch.Tensor) -> torch.Tensor:
    """The grouped 1x1-convolution layers applied in turn, ReLU between them (not after the last)."""
    for position, layer in enumerate(layers):
        x = layer(x)
        if position < len(layers) - 1:
            x = F.relu(x)
    return x


def train_grouped(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    epochs: int,
    batch_size: int = 2,
    lr: float = 0.01,
    generator: torch.Generator | None = None,
) -> int:
    """Plain SGD, one shared reshuffle per epoch; returns the optimizer steps taken.

    Loss: the sum over networks of each network's mean cross-entropy, so every network gets the
    gradient it would get alone.
    """
    model.train()  # BatchNorm models (reference_resnet) normalize by the batch, as the reference does
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    n_train, steps = images.shape[0], 0
    for _ in range(epochs):
        order = torch.randperm(n_train, generator=generator).to(images.device)
        for start in range(0, n_train, batch_size):
            indices = order[start : start + batch_size]
            logits = model(images[indices])  # [b, M, 2]
            targets = labels[indices].unsqueeze(1).expand(-1, model.models)
            loss = F.cross_entropy(logits.transpose(1, 2), targets, reduction="sum") / len(indices)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
    return steps
