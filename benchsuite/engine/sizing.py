"""How many draws one chunk of Guess & Check holds, and whether to stage its decisions."""

from __future__ import annotations

import copy

import torch
from torch import nn

from benchsuite.batchnorm import has_batchnorm
from benchsuite.engine.layout import Layout
from benchsuite.engine.sequential import SequentialPlan


def activation_numbers(module: nn.Module, x: torch.Tensor) -> int:
    """Numbers of all intermediate outputs (every submodule's) of one network on one input."""
    total = 0

    def hook(_m, _i, out):
        nonlocal total
        if isinstance(out, torch.Tensor):
            total += out.numel()

    template = copy.deepcopy(module).eval()  # a private copy: the caller's module stays untouched
    for m in template.modules():
        m.register_forward_hook(hook)
    with torch.no_grad():
        template(x[:1])
    return total


def free_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 2 << 30


def chunk_bytes_per_draw(
    layout: Layout,
    module: nn.Module,
    x: torch.Tensor,
    plan: SequentialPlan | None = None,
    staged: bool = True,
) -> int:
    """Peak bytes one draw of a chunk needs on the device (upper estimates):

    - its float32 parameters (4 B per stream number), plus a gathered copy of survivors when
      decisions are staged;
    - Gaussian entries: Box-Muller's float64 temporaries (~40 B per number);
    - the forward's intermediate outputs over all N points: fast path 8 B per per-candidate
      activation (the shared prefix is computed once); generic vmap path 12 B per activation of
      every module (temporaries and the swapped-label comparison), plus its words/odd buffers.
    """
    numbers = layout.numbers
    normal = sum(e.count for e in layout.entries if e.kind == "normal")
    n = x.shape[0]
    if plan is not None:
        per_point = activation_numbers(nn.Sequential(*plan.layers), plan.features(x[:1]))
        return 4 * numbers * (2 if staged else 1) + 40 * normal + 8 * per_point * n + 64
    activations = activation_numbers(module, x) * n
    return 16 * numbers + 40 * normal + 12 * activations + 64


# BatchNorm networks on CPU (batchnorm_gnc.py): activations of one chunk over all N points (as
# activation_numbers counts them: nested outputs too, an overestimate). The
# convolutions want many networks per call, the element-wise passes want the chunk in cache;
# measured on ResNet4 (docs/performance.md, issue 16 item 2): 32-64 draws at w=1/2 alike.
BATCHNORM_CPU_CHUNK_BYTES = 160 << 20
BATCHNORM_CPU_DRAWS = (8, 128)  # bounds on the draws of such a chunk


def batchnorm_cpu_draws(module: nn.Module, x: torch.Tensor) -> int:
    """Draws per chunk for a BatchNorm network on CPU: BATCHNORM_CPU_CHUNK_BYTES of float32
    activations over all N points, within BATCHNORM_CPU_DRAWS."""
    per_draw = 4 * activation_numbers(module, x) * x.shape[0]
    low, high = BATCHNORM_CPU_DRAWS
    return int(min(high, max(low, BATCHNORM_CPU_CHUNK_BYTES // max(1, per_draw))))


def draws_per_chunk(
    option,
    layout: Layout,
    module,
    x,
    device,
    fraction: float,
    swap: bool,
    plan: SequentialPlan | None = None,
    staged: bool = True,
) -> int:
    """Draws per chunk: the option (in candidates) or "auto", never more than what fits
    `fraction` of the device's free memory (so an explicit size cannot run out of memory
    either). CPU chunks are capped at 256 draws: larger ones only spill out of cache; BatchNorm
    networks at batchnorm_cpu_draws."""
    per_draw = 1 if not swap else 2
    fits = int(free_memory_bytes(device) * fraction) // chunk_bytes_per_draw(
        layout, module, x, plan, staged
    )
    if option != "auto":
        return int(max(1, min(int(option) // per_draw, fits)))
    cap = 1 << 20 if device.type == "cuda" else 256
    if device.type == "cpu" and plan is None and has_batchnorm(module):
        cap = batchnorm_cpu_draws(module, x)
    return int(max(1, min(cap, fits)))


def resolve_early_rejection(
    option, device: torch.device, plan: SequentialPlan | None, batchnorm: bool
) -> bool:
    """ "auto": stage only where it was measured to pay (docs/performance.md). On CUDA gathering
    the survivors' weights costs more memory traffic than the skipped points save (H100: 7.0 vs
    4.9 M candidates/s without/with); on CPU with a leading Linear layer that layer is applied to
    all N points while its weights are in cache, after which the rest is too cheap to stage.
    Conv-first and generic modules on CPU are dominated by the forward, so they stage."""
    if batchnorm:
        return False
    if option != "auto":
        return bool(option)
    if device.type != "cpu":
        return False
    return plan is None or not plan.first_is_linear
