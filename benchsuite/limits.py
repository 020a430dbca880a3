"""Resource limits checked before any work starts, so a tiny hostile suite cannot exhaust a machine.

Two kinds: limits on the suite itself (file size, cells, grid combinations, epochs, models), checked
at validation because they depend only on the file; and the memory a cell will need against the
memory this machine has, checked by `run` and `validate` because it depends on the machine. Each
refusal says the number and the limit; `--allow-large` lifts them for users who mean it (it never
enters the resolved suite).
"""

from __future__ import annotations

import os
from pathlib import Path

from benchsuite.architectures.build import parameter_count
from benchsuite.errors import BenchsuiteError
from benchsuite.resolved import Entry, Suite

MAX_SUITE_FILE_BYTES = 1 << 20  # shipped suites are under 4 KB
MAX_CELLS = 200_000  # the largest shipped suite has a few thousand
MAX_GRID_COMBINATIONS = 1_000  # per optimizer or baseline entry
MAX_EPOCHS = 1_000_000
MAX_MODELS = 1_000_000  # interpolating networks per cell
MAX_CANDIDATES = 10**12  # a sampler's draws per cell; the shipped studies give 10^10
MAX_NETWORKS_TRAINED = 10**9  # a gradient entry's max_networks per cell (default 10 x models)
MAX_SECONDS_PER_CELL = 365 * 24 * 3600  # a year: a timer cannot wait past the platform's time_t
FLOAT32_MAX = 3.4028234663852886e38  # networks train in float32: a larger setting overflows there
MEMORY_SHARE = 0.8  # of the available memory a single cell may plan to use
FLOAT_BYTES = 4
ORDER_BYTES = 8  # one int64 per training image per epoch and network: the mini-batch orders
TRAINING_COPIES = 6  # parameters, gradients, two optimizer states, a spare copy, activations
ALLOW_LARGE = "--allow-large lifts this limit"


def too_large(what: str, number: int, limit: int) -> str:
    """'2,250,000 cells; the limit is 200,000 (--allow-large lifts this limit)'."""
    return f"{number:,} {what}; the limit is {limit:,} ({ALLOW_LARGE})"


def available_memory(device: str = "cpu") -> int | None:
    """Bytes this process can still use on `device` (CUDA: free device memory), None if unknown."""
    if device.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            return int(torch.cuda.mem_get_info(torch.device(device if ":" in device else "cuda"))[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def cell_memory(parameters: int, entry: Entry, n_train: int, device: str) -> int:
    """Bytes a cell plans to hold at once: the networks it keeps, and for gradient optimizers one
    round of networks in training with their mini-batch orders (engine/training.py's layout).
    Samplers bound their own chunks by free memory, so only the kept networks count for them."""
    kept = entry.models * parameters * FLOAT_BYTES
    if entry.role == "baseline":
        return 2 * kept
    from benchsuite.engine.training import CPU_NETWORKS_PER_ROUND, GPU_NETWORKS_PER_ROUND

    cap = GPU_NETWORKS_PER_ROUND if device.startswith("cuda") else CPU_NETWORKS_PER_ROUND[1]
    per_round = min(cap, entry.settings.max_networks)
    epochs = entry.settings.epochs
    return kept + per_round * (TRAINING_COPIES * parameters * FLOAT_BYTES + epochs * n_train * ORDER_BYTES)


def _parameters_or_none(spec, shape, width, depth) -> int | None:
    try:
        return parameter_count(spec, shape, width, depth)
    except Exception:  # noqa: BLE001 - any plugin error: validation reports it, not this estimate
        return None


def check_memory(suite: Suite, registry, device: str | None = None, allow_large: bool = False) -> None:
    """Refuse a suite whose largest cell would need more than MEMORY_SHARE of the memory available."""
    if allow_large:
        return
    device = device or suite.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    available = available_memory(device)
    if available is None:
        return
    worst = (0, "")
    for task in suite.tasks:
        shape = registry.dataset(task.dataset).input_shape
        if shape is None:
            continue
        n_train = max(task.n_train)
        for grid in suite.architectures:
            spec = registry.architecture(grid.name)
            for variant in grid.variants():
                width, depth = variant.width, variant.depth
                parameters = _parameters_or_none(spec, shape, width, depth)
                if parameters is None:  # a plugin that cannot build on meta: not estimated
                    continue
                for entry in suite.entries:
                    needed = cell_memory(parameters, entry, n_train, device)
                    if needed > worst[0]:
                        worst = (needed, (
                            f"{entry.label} on {grid.name} (width {width}, depth {depth}), "
                            f"N={n_train}: {entry.models:,} networks of {parameters:,} parameters"
                        ))
    if worst[0] > MEMORY_SHARE * available:
        raise BenchsuiteError(
            f"{suite.path}: a cell would need about {worst[0] / 2**30:,.1f} GiB ({worst[1]}); "
            f"{device} has {available / 2**30:,.1f} GiB available and a cell may plan "
            f"{MEMORY_SHARE:.0%} of it ({ALLOW_LARGE})"
        )
