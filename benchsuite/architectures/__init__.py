"""Architecture factories of protocol.md: mlp, lenet, resnet4 (registered in builtins); build.py
builds any architecture plugin for a suite.

The factories import torch when first used, not when the package is: suite validation imports
build.py, and `publish`, `compare` and `leaderboard` must start without torch.
"""

from __future__ import annotations

import importlib

_HOMES = {
    "build_lenet": "lenet",
    "build_mlp": "mlp",
    "build_resnet4": "resnet4",
    "parse_width": "widths",
    "width_label": "widths",
}
__all__ = ["build_lenet", "build_mlp", "build_resnet4", "parse_width", "width_label"]


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
