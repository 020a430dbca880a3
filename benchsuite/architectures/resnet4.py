"""ResNet4 of protocol.md: the 4-layer network of Page's "How to train your ResNet", width-scaled.

prep conv3x3-BN-ReLU(6w)
layer1 conv-BN-ReLU(12w) + maxpool2 + residual block (x + two conv-BN-ReLU)
layer2 conv-BN-ReLU(24w) + maxpool2
layer3 conv-BN-ReLU(48w) + maxpool2 + residual block
global max-pool, linear to 2 logits (no bias), output x 0.125.

Convolutions are 3x3, padding 1 and always bias-free (a BatchNorm follows each, so a bias would be
redundant); BatchNorm has affine parameters. BatchNorm is benchsuite.batchnorm.StackableBatchNorm2d
(nn.BatchNorm2d in tensor ops: the native CUDA kernel fails under vmap with stacked buffers).
Under G&C the BatchNorm statistics are those of the training set: see calibrate_batchnorm.

Depth variants drop layers after the prep layer, from the input side (protocol.md: "remove
layer1+layer2 / layer1 / nothing"): "layer3", "layer2-3", "full" (or 1, 2, 3 layers).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from benchsuite.architectures.widths import WidthSpec, parse_width, scaled
from benchsuite.batchnorm import StackableBatchNorm2d

BASE = OrderedDict(prep=6, layer1=12, layer2=24, layer3=48)
RESIDUAL = {"layer1": True, "layer2": False, "layer3": True}
OUTPUT_SCALE = 0.125

DEPTHS = {
    "layer3": ("layer3",),
    "layer2-3": ("layer2", "layer3"),
    "full": ("layer1", "layer2", "layer3"),
}
DEPTH_BY_COUNT = {1: "layer3", 2: "layer2-3", 3: "full"}
FULL_DEPTH = "full"


class Residual(nn.Module):
    """x + body(x): the identity shortcut of the ResNet blocks (no in-place add, vmap-safe)."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class GlobalMaxPool(nn.Module):
    """[B, C, H, W] -> [B, C]: max over all positions, whatever the input size (28 or 32 px)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=(-2, -1))


class Scale(nn.Module):
    """Multiply by a constant: Page's final x 0.125, which keeps the logits in a sane range."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


def conv_bn(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        StackableBatchNorm2d(out_channels),
        nn.ReLU(),
    )


def parse_depth(depth) -> tuple[str, ...]:
    """Layers kept after prep, for a variant name or a layer count 1..3; None means full."""
    if depth is None:
        depth = FULL_DEPTH
    if isinstance(depth, int) and not isinstance(depth, bool) and depth in DEPTH_BY_COUNT:
        depth = DEPTH_BY_COUNT[depth]
    key = str(depth).strip().lower()
    if key.isdigit() and int(key) in DEPTH_BY_COUNT:
        key = DEPTH_BY_COUNT[int(key)]
    if key not in DEPTHS:
        raise ValueError(
            f"resnet4 depth must be one of {', '.join(DEPTHS)} (or 1..3 layers), got {depth!r}"
        )
    return DEPTHS[key]


def channel_sizes(width: WidthSpec = 1) -> dict[str, int]:
    """Channels of prep, layer1, layer2, layer3: int(6w), int(12w), int(24w), int(48w)."""
    multipliers = parse_width(width, len(BASE))
    return {
        name: scaled(base, w, f"resnet4 {name}")
        for (name, base), w in zip(BASE.items(), multipliers)
    }


def build_resnet4(
    input_shape, width: WidthSpec = 1, depth=FULL_DEPTH, bias: bool = False
) -> nn.Sequential:
    """ResNet4 for images shaped (C, H, W) -> [B, 2] logits. `bias` only concerns the final linear."""
    in_channels, height, width_px = (int(s) for s in input_shape)
    kept = parse_depth(depth)
    if min(height, width_px) < 2 ** len(kept):
        raise ValueError(
            f"resnet4 with {len(kept)} pooling layers needs inputs of at least "
            f"{2 ** len(kept)}x{2 ** len(kept)}, got {height}x{width_px}"
        )
    channels = channel_sizes(width)
    blocks: OrderedDict[str, nn.Module] = OrderedDict(prep=conv_bn(in_channels, channels["prep"]))
    previous = channels["prep"]
    for name in kept:
        out = channels[name]
        layer = [conv_bn(previous, out), nn.MaxPool2d(2)]
        if RESIDUAL[name]:
            layer.append(Residual(nn.Sequential(conv_bn(out, out), conv_bn(out, out))))
        blocks[name] = nn.Sequential(*layer)
        previous = out
    blocks["pool"] = GlobalMaxPool()
    blocks["linear"] = nn.Linear(previous, 2, bias=bias)
    blocks["scale"] = Scale(OUTPUT_SCALE)
    return nn.Sequential(blocks)
