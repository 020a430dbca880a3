"""LeNet-5 of protocol.md and its depth variants.

conv5x5(6w)-ReLU-maxpool2-conv5x5(16w)-ReLU-maxpool2-FC(120w)-ReLU-FC(84w)-ReLU-FC(2), no padding,
channel counts int(base * w). A plain nn.Sequential of Conv2d/ReLU/MaxPool2d/Flatten/Linear so
fast G&C engines can specialise it.

Parameter counts: protocol.md's (MNIST / CIFAR) 1,062 / 1,472 (w=1/6), 4,753 / 6,653 (w=2/6) and
43,746 / 61,326 (w=1) are those of the layers *with* bias vectors (the reference code keeps
biases as parameters, zeroed under G&C). They are reproduced exactly by bias=True; the bias-free
network the G&C protocol samples has sum(channels) + 2 fewer parameters.

Depth variants "Xc-Yf": X convolution blocks (conv-ReLU-maxpool), then Y fully connected layers
of which the last is the 2-logit output. Layers are kept from the input side, so the hidden FC of
"2c-2f" is FC(120w) (LeNet's fc1) and "1c-1f" is conv1-ReLU-pool-FC(2).
"""

from __future__ import annotations

from torch import nn

from benchsuite.architectures.widths import WidthSpec, parse_width, scaled

CONV_BASE = (6, 16)
FC_BASE = (120, 84)
KERNEL = 5

# name -> (convolution blocks, hidden fully connected layers)
DEPTHS = {"1c-1f": (1, 0), "2c-1f": (2, 0), "2c-2f": (2, 1), "2c-3f": (2, 2)}
FULL_DEPTH = "2c-3f"


def parse_depth(depth) -> tuple[int, int]:
    """(conv blocks, hidden FCs) of a variant name; None means the full LeNet."""
    key = FULL_DEPTH if depth is None else str(depth).strip().lower()
    if key not in DEPTHS:
        raise ValueError(f"lenet depth must be one of {', '.join(DEPTHS)}, got {depth!r}")
    return DEPTHS[key]


def layer_sizes(width: WidthSpec = 1) -> tuple[int, int, int, int]:
    """(conv1, conv2, fc1, fc2) sizes of the full LeNet: int(6w), int(16w), int(120w), int(84w)."""
    multipliers = parse_width(width, 4)
    names = ("conv1", "conv2", "fc1", "fc2")
    return tuple(
        scaled(base, w, f"lenet {name}")
        for name, base, w in zip(names, CONV_BASE + FC_BASE, multipliers)
    )


def _spatial_after(size: int, blocks: int) -> int:
    for _ in range(blocks):
        size = (size - (KERNEL - 1)) // 2
    return size


def minimum_input_size(blocks: int) -> int:
    """Smallest side for which `blocks` conv5x5 + maxpool2 blocks leave at least a 1x1 map."""
    size = 1
    while _spatial_after(size, blocks) < 1:
        size += 1
    return size


def build_lenet(
    input_shape, width: WidthSpec = 1, depth=FULL_DEPTH, bias: bool = False
) -> nn.Sequential:
    """LeNet for images shaped `input_shape` = (C, H, W), mapping [B, C, H, W] to [B, 2] logits.

    Raises ValueError when the images are too small for the convolutions (e.g. digits' 8x8).
    """
    channels, height, width_px = (int(s) for s in input_shape)
    blocks, hidden = parse_depth(depth)
    variant = next(name for name, shape in DEPTHS.items() if shape == (blocks, hidden))
    if _spatial_after(height, blocks) < 1 or _spatial_after(width_px, blocks) < 1:
        side = minimum_input_size(blocks)
        raise ValueError(
            f"lenet needs inputs of at least {side}x{side} for depth {variant} "
            f"(got {height}x{width_px}); "
            f"it was designed for 28x28 (MNIST) and 32x32 (CIFAR) images: use the mlp for smaller ones"
        )
    sizes = layer_sizes(width)
    layers: list[nn.Module] = []
    in_channels = channels
    for out_channels in sizes[:blocks]:
        layers += [
            nn.Conv2d(in_channels, out_channels, KERNEL, bias=bias),
            nn.ReLU(),
            nn.MaxPool2d(2),
        ]
        in_channels = out_channels
    layers.append(nn.Flatten())
    features = in_channels * _spatial_after(height, blocks) * _spatial_after(width_px, blocks)
    for size in sizes[2 : 2 + hidden]:
        layers += [nn.Linear(features, size, bias=bias), nn.ReLU()]
        features = size
    layers.append(nn.Linear(features, 2, bias=bias))
    return nn.Sequential(*layers)
