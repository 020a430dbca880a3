"""Built-in architectures of protocol.md: mlp, lenet, resnet4."""

from __future__ import annotations

from benchsuite import hookimpl
from benchsuite.architectures.lenet import FULL_DEPTH as LENET_FULL
from benchsuite.architectures.lenet import build_lenet
from benchsuite.architectures.mlp import MAX_DEPTH as MLP_FULL
from benchsuite.architectures.mlp import build_mlp
from benchsuite.architectures.resnet4 import FULL_DEPTH as RESNET4_FULL
from benchsuite.architectures.resnet4 import build_resnet4
from benchsuite.records import ArchitectureSpec


def _specs() -> list[ArchitectureSpec]:
    specs = [
        ArchitectureSpec(
            name="mlp",
            build=build_mlp,
            description="2x2 max-pooled input, hidden [120w, 60w, 30w, 12w], ReLU; depth 1..4 keeps the "
            "last d hidden layers",
            default_width=1,
            default_depth=MLP_FULL,
        ),
        ArchitectureSpec(
            name="lenet",
            build=build_lenet,
            description="LeNet-5: conv5x5(6w)-pool-conv5x5(16w)-pool-FC(120w)-FC(84w)-FC(2), no padding; "
            "depth 1c-1f, 2c-1f, 2c-2f, 2c-3f (full); widths incl. '1/6*'; needs >= 16x16 inputs",
            default_width=1,
            default_depth=LENET_FULL,
        ),
        ArchitectureSpec(
            name="resnet4",
            build=build_resnet4,
            description="Page's 4-layer ResNet: prep(6w), layer1(12w)+residual, layer2(24w), "
            "layer3(48w)+residual, conv3x3-BN-ReLU, global max-pool, linear x 0.125; depth "
            "layer3, layer2-3, full. Has BatchNorm: see benchsuite.batchnorm",
            default_width=1,
            default_depth=RESNET4_FULL,
        ),
    ]
    return specs


@hookimpl
def benchsuite_architectures():
    return _specs()
