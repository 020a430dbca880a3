"""Whether this process's batched matrix products compute each batch item by itself.

The stacked training paths (stacked_mlp.py, stacked_conv.py, stacked_resnet.py) put K networks'
products in one torch.bmm and promise that a network's numbers do not depend on the stack it
trains in. On CPU that holds when MKL runs in its reproducible mode (MKL_CBWR, set when
benchsuite is imported); without it MKL on some CPUs picks kernels by batch position and
alignment (measured on AMD EPYC, MKL 2024.2: a [1, 1152] x [1152, 25] product gets other bits at
some positions; on the Intel Xeon it never did). If torch called MKL before benchsuite was
imported, the setting comes too late; one probe per process finds out, and training warns.
All of it on one intra-op thread, as the engine runs every CPU kernel (engine/threads.py): on
two, MKL may split a one-item product's reduction across the threads (an Intel Xeon with
AVX-512: [1, 1152] x [1152, 25] alone differs from the same item in a stack of five), which no
mode setting promises away; so the probe runs on one thread too.
"""

from __future__ import annotations

import functools
import os
import warnings

import torch

from benchsuite.engine.threads import torch_single_threaded

# products of the shapes that broke on the EPYC without MKL_CBWR (LeNet w = 1/6's first-layer
# weight gradient, and two like it); [m, k, n] with a contiguous right-hand side
PROBE_SHAPES = ((1, 1152, 25), (2, 1152, 25), (1, 16, 150))
PROBE_STACK = 6


@functools.lru_cache(maxsize=1)
def batched_gemm_is_invariant() -> bool:
    """True when every item of a stacked product equals that item in a stack of two at another
    position and in fresh memory, for each probe shape (CPU, float32)."""
    generator = torch.Generator().manual_seed(0)
    with torch_single_threaded(torch.device("cpu")):
        for m, k, n in PROBE_SHAPES:
            a = torch.randn(PROBE_STACK, m, k, generator=generator)
            b = torch.randn(PROBE_STACK, k, n, generator=generator)
            whole = torch.bmm(a, b)
            for i in range(PROBE_STACK):
                pair = [i, (i + 1) % PROBE_STACK]
                if not torch.equal(torch.bmm(a[pair], b[pair])[0], whole[i]):
                    return False
    return True


def warn_unless_invariant(device: torch.device) -> None:
    """One warning per process when stacked CPU training cannot promise stack-independent bits."""
    if device.type == "cpu" and not batched_gemm_is_invariant():
        _warn_once(os.environ.get("MKL_CBWR"))


@functools.lru_cache(maxsize=1)
def _warn_once(setting: str | None) -> None:
    warnings.warn(
        "benchsuite: this CPU's batched matrix products depend on the batch position "
        f"(MKL_CBWR={setting or 'unset'} did not take effect: torch called MKL before benchsuite was "
        "imported?), so a network's numbers may depend on the stack it trained in; import benchsuite "
        "first, or run with MKL_CBWR=AUTO in the environment",
        RuntimeWarning,
        stacklevel=3,
    )
