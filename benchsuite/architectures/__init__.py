"""Architecture factories of protocol.md: mlp, lenet, resnet4 (registered in builtins)."""

from benchsuite.architectures.lenet import build_lenet
from benchsuite.architectures.mlp import build_mlp
from benchsuite.architectures.resnet4 import build_resnet4
from benchsuite.architectures.widths import parse_width, width_label

__all__ = ["build_lenet", "build_mlp", "build_resnet4", "parse_width", "width_label"]
