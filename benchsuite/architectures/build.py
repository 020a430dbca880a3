"""Building a suite's architecture: the one path from (plugin, input shape, width, depth, bias) to
a module, shared by validation, the memory check and the runner so that all three build the same
network. Imports no torch until a module is built (`publish` imports the suite module)."""

from __future__ import annotations

from typing import Any

from benchsuite.protocol import BIAS_AUTO


def bias_for(bias: bool | str, role: str) -> bool:
    """`auto` follows protocol.md: gradient optimizers train biases initialised at zero; random
    interpolators have none (the reference keeps them at zero, the same function)."""
    return role == "optimizer" if bias == BIAS_AUTO else bool(bias)


def build_module(spec, input_shape, width, depth, bias: bool) -> Any:
    """Build an architecture, passing depth only when the suite gave one."""
    kwargs = {"width": width, "bias": bias}
    if depth is not None:
        kwargs["depth"] = depth
    return spec.build(tuple(input_shape), **kwargs)


def check_builds(spec, input_shape, width, depth, bias: bool) -> None:
    """Build on the meta device (no memory: a width of 10^6 must not allocate at validation); a
    plugin that cannot build there is built for real, whose error is the one to report."""
    import torch

    try:
        with torch.device("meta"):
            build_module(spec, input_shape, width, depth, bias)
    except Exception as error:  # noqa: BLE001 - retried on the CPU, whose error is the one to report
        if "overflow" in str(error).lower():  # sizes beyond int64: building for real would too
            raise ValueError(f"too large to build: its tensor sizes overflow ({str(error).splitlines()[0][:200]})") from None
        build_module(spec, input_shape, width, depth, bias)


def parameter_count(spec, input_shape, width, depth) -> int:
    """Parameters of one network (biases included), counted on the meta device (no memory)."""
    import torch

    with torch.device("meta"):
        module = build_module(spec, input_shape, width, depth, True)
    return sum(p.numel() for p in module.parameters())
