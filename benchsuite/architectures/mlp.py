"""The MLP of protocol.md: 2x2 max-pooled input, hidden [120w, 60w, 30w, 12w], 2 logits, ReLU.

Built as a plain nn.Sequential of MaxPool2d/Flatten/Linear/ReLU so that fast G&C engines can
recognise and specialise it, and so that torch.func stacking needs nothing special.

Parameter counts: protocol.md's 33,128 (MNIST) / 101,768 (CIFAR) at w=1 are those of the layers
*with* bias vectors (the reference code keeps biases as parameters and zeroes them under G&C);
the bias-free network the G&C protocol actually samples has 224 fewer (32,904 / 101,544).
"""

from __future__ import annotations

from torch import nn

from benchsuite.architectures.widths import WidthSpec, parse_width, scaled

HIDDEN_BASE = (120, 60, 30, 12)
MAX_DEPTH = len(HIDDEN_BASE)


def parse_depth(depth) -> int:
    """Hidden-layer count 1..4 (int or digit string); None means the full four."""
    if depth is None:
        return MAX_DEPTH
    try:
        value = int(depth)
    except (TypeError, ValueError):
        raise ValueError(f"mlp depth must be 1..{MAX_DEPTH} hidden layers, got {depth!r}") from None
    if not 1 <= value <= MAX_DEPTH or str(value) != str(depth).strip():
        raise ValueError(f"mlp depth must be 1..{MAX_DEPTH} hidden layers, got {depth!r}")
    return value


def hidden_sizes(width: WidthSpec = 1, depth=MAX_DEPTH) -> list[int]:
    """Hidden layer sizes. Depth d keeps the LAST d of the four layers (protocol.md: "depth drops
    the largest layers first"; at w=2/6 depth 1..4 is [4], [10, 4], [20, 10, 4], [40, 20, 10, 4]).
    A per-layer width refers to the full four-layer network."""
    multipliers = parse_width(width, MAX_DEPTH)
    sizes = [
        scaled(base, w, f"mlp hidden layer {i + 1}")
        for i, (base, w) in enumerate(zip(HIDDEN_BASE, multipliers))
    ]
    return sizes[MAX_DEPTH - parse_depth(depth) :]


def input_features(input_shape) -> int:
    """Inputs after the 2x2 max-pool: C * (H // 2) * (W // 2) (digits 16, MNIST 196, CIFAR 768)."""
    channels, height, width = (int(s) for s in input_shape)
    if height < 2 or width < 2:
        raise ValueError(
            f"mlp max-pools its input 2x2 and needs at least 2x2 images, got {height}x{width}"
        )
    return channels * (height // 2) * (width // 2)


def build_mlp(
    input_shape, width: WidthSpec = 1, depth=MAX_DEPTH, bias: bool = False
) -> nn.Sequential:
    """MLP for images shaped `input_shape` = (C, H, W), mapping [B, C, H, W] to [B, 2] logits.

    bias=False is the G&C protocol's network; bias=True adds (trainable) bias vectors.
    """
    layers: list[nn.Module] = [nn.MaxPool2d(2), nn.Flatten()]
    features = input_features(input_shape)
    for size in hidden_sizes(width, depth):
        layers += [nn.Linear(features, size, bias=bias), nn.ReLU()]
        features = size
    layers.append(nn.Linear(features, 2, bias=bias))
    return nn.Sequential(*layers)
