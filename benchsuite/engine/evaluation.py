"""The host's evaluation: accuracy and ties of stacked networks, with the numbers of stacked.evaluate
(but ResNet4's on convnet.c, below).

Why: evaluation of a LeNet study cost as much as its SGD training (issue 18: every network ran
the first layer on the same 2,000 test images through vmap, in activations of gigabytes).
benchsuite.stacked.evaluate defines the numbers: chunks of MODELS_PER_CALL networks and
IMAGES_PER_CALL images, each through StackedForward. Here:
- plain Sequentials of Linear/Conv2d/ReLU/MaxPool2d/Flatten on the CPU in float32 take the wide
  path (engine/wide.py, engine/blocks.py): the old chunks keep their boundaries; inside one, the
  networks go in sub-chunks of about NETWORKS_PER_CALL, the images in blocks of about BLOCK_ROWS
  (never fewer than the plan's min_rows), convolutions on sub-blocks of about CONV_BYTES of
  activations; an image chunk smaller than min_rows (a small training set) goes through
  StackedForward as before;
- ResNet4 in eval mode on the CPU in float32, where engine/native.py's kernels are built: each
  network at each image in convnet.c (engine.stacked_resnet.native_resnet_logits; numerics
  revision 12: StackedForward's logits to float32 rounding, 3-5x faster, docs/performance.md);
- anything else (other BatchNorm networks, plugin architectures, CUDA) goes through
  StackedForward chunk by chunk, exactly as stacked.evaluate does.
Work is split across networks over worker threads (engine/threads.py), each kernel on one thread,
so the thread count never changes a number (tests/test_evaluation.py).
"""

from __future__ import annotations

import copy
import math
import threading

import torch
from torch import nn

from benchsuite.engine.blocks import Block, SubChunk, Workspace
from benchsuite.engine.blocks import logits as block_logits
from benchsuite.engine.parts import bounds
from benchsuite.engine.sizing import activation_numbers, free_memory_bytes
from benchsuite.engine.stacked_resnet import native_resnet_logits
from benchsuite.engine.threads import cpu_threads, spread
from benchsuite.engine.wide import WidePlan, formulations
from benchsuite.protocol import DEFAULT_TIE_RULE
from benchsuite.stacked import (
    IMAGES_PER_CALL,
    MODELS_PER_CALL,
    StackedForward,
    correct_counts,
    tie_counts,
)

NETWORKS_PER_CALL = 32  # networks per sub-chunk (measured: 16-50 alike on LeNet, CPU)
BLOCK_ROWS = 128  # images per block of the flat (Linear) part
CONV_BYTES = 16 * 2**20  # largest activation of a convolutional sub-block (measured: 2-32 MB alike)
OLD_PATH_MEMORY_FRACTION = 0.5  # StackedForward chunks run in parallel only within this


def _chunks(total: int, size: int) -> list[tuple[int, int]]:
    return [(a, min(total, a + size)) for a in range(0, total, size)]


def _wide_plan(module, parameters, buffers, x) -> WidePlan | None:
    if x.device.type != "cpu" or x.dtype != torch.float32 or buffers:
        return None
    if any(v.dtype != torch.float32 or v.device.type != "cpu" for v in parameters.values()):
        return None
    return WidePlan.of(module, x.shape[1:])


def _sub_chunks(plan: WidePlan, size: int, workers: int):
    """(ranges, formulations) of one old chunk of `size` networks: sub-chunks of at least two
    networks, enough for every worker; one sub-chunk (the old call's group count) when some
    layer computes other bits at the smaller size (engine.wide.formulations)."""
    parts = max(math.ceil(size / NETWORKS_PER_CALL), min(workers, size // 2))
    ranges = bounds(size, parts)
    hows = {b - a: formulations(plan, b - a, size) for a, b in ranges}
    if any(h is None for h in hows.values()):
        ranges = [(0, size)]
        hows = {size: formulations(plan, size, size)}
        if hows[size] is None:
            return None
    return [(a, b, hows[b - a]) for a, b in ranges]


class _Counts:
    """Per-network correct and tied points, summed over image chunks (integers: any order)."""

    def __init__(self, count: int, y: torch.Tensor, tie_rule: str):
        self.correct = torch.zeros(count, dtype=torch.long)
        self.ties = torch.zeros(count, dtype=torch.long)
        self.y, self.tie_rule = y, tie_rule
        self.lock = threading.Lock()

    def __call__(self, a: int, b: int, i0: int, i1: int, values: torch.Tensor) -> None:
        correct = correct_counts(values, self.y[i0:i1], self.tie_rule).cpu()
        ties = tie_counts(values).cpu()
        with self.lock:
            self.correct[a:b] += correct
            self.ties[a:b] += ties


def _wide_task(plan, parameters, x, sink, image_chunks, share):
    """One worker's share of an old model chunk: its sub-chunks on every wide image chunk."""
    work = Workspace()
    chunks = [
        (a, SubChunk(plan, {k: v[a:b] for k, v in parameters.items()}, hows))
        for a, b, hows in share
    ]
    largest = max(chunk.count for _, chunk in chunks)
    per_image = 4 * largest * plan.activation_numbers()
    for i0, i1 in image_chunks:
        rows = max(BLOCK_ROWS, plan.min_rows)
        for b0, b1 in bounds(i1 - i0, max(1, (i1 - i0) // rows)):
            images = b1 - b0
            sub = max(2, min(images, CONV_BYTES // max(1, per_image)))
            block = Block(plan, x[i0 + b0 : i0 + b1], bounds(images, math.ceil(images / sub)))
            for a, chunk in chunks:
                sink(a, a + chunk.count, i0 + b0, i0 + b1, block_logits(plan, chunk, block, work))


def _old_task(module, parameters, buffers, x, sink, m0, m1, i0, i1):
    """One chunk exactly as stacked.evaluate runs it (a private module: functional_call
    re-parametrizes its module in place, so threads must not share one)."""
    forward = StackedForward(copy.deepcopy(module))
    p = {k: v[m0:m1] for k, v in parameters.items()}
    b = {k: v[m0:m1] for k, v in buffers.items()}
    sink(m0, m1, i0, i1, forward(p, b, x[i0:i1]))


@torch.no_grad()
def run(module, parameters, buffers, x, sink, workers: int | str = "auto") -> None:
    """sink(a, b, i0, i1, logits [b - a, i1 - i0, out]) for networks a..b on images i0..i1,
    covering every (network, image) once, from worker threads: stacked.evaluate's logits (ResNet4
    on convnet.c: theirs to float32 rounding)."""
    count = int(next(iter(parameters.values())).shape[0]) if parameters else 0
    n = int(x.shape[0])
    if count == 0 or n == 0:
        return
    device = x.device
    threads = cpu_threads(workers) if device.type == "cpu" else 1
    plan = _wide_plan(module, parameters, buffers, x)
    image_chunks = _chunks(n, IMAGES_PER_CALL)
    computed = native_resnet_logits(module, parameters, buffers, x, threads) if buffers else None
    if computed is not None:
        for m0, m1 in _chunks(count, MODELS_PER_CALL):
            for i0, i1 in image_chunks:
                sink(m0, m1, i0, i1, computed[m0:m1, i0:i1])
        return
    wide_images = [c for c in image_chunks if plan is not None and c[1] - c[0] >= plan.min_rows]
    wide, old = [], []
    for m0, m1 in _chunks(count, MODELS_PER_CALL):
        shares = _sub_chunks(plan, m1 - m0, threads) if wide_images else None
        for i0, i1 in image_chunks:
            if shares is None or (i0, i1) not in wide_images:
                old.append((m0, m1, i0, i1))
        if shares is not None:
            shifted = [(m0 + a, m0 + b, hows) for a, b, hows in shares]
            wide += [shifted[a:b] for a, b in bounds(len(shifted), threads)]
    params = {k: v.detach() for k, v in parameters.items()}
    tasks = [lambda s=s: _wide_task(plan, params, x, sink, wide_images, s) for s in wide]
    old_tasks = [lambda c=c: _old_task(module, params, buffers, x, sink, *c) for c in old]
    if old_tasks and not _old_in_parallel(module, x, old, threads):
        spread(lambda task: task(), old_tasks, 1, device)
        old_tasks = []
    spread(lambda task: task(), tasks + old_tasks, threads, device)


def evaluate(
    module: nn.Module,
    parameters: dict[str, torch.Tensor],
    buffers: dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    tie_rule: str = DEFAULT_TIE_RULE,
    workers: int | str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(accuracy in [0, 1] as float64, tied points) of each stacked network on (x, y): the
    numbers of stacked.evaluate with its default chunks. `workers`: threads on CPU ("auto": the
    CPUs this process may use); it changes no number."""
    count = int(next(iter(parameters.values())).shape[0]) if parameters else 0
    counts = _Counts(count, y, tie_rule)
    run(module, parameters, buffers, x, counts, workers)
    n = max(1, int(x.shape[0]))
    return (counts.correct.double() / n).to(x.device), counts.ties.to(x.device)


def logits(module, parameters, buffers, x, workers: int | str = "auto") -> torch.Tensor:
    """[K, n, out]: every network's logits on every image, as evaluate computes them (tests)."""
    count = int(next(iter(parameters.values())).shape[0])
    found: dict[tuple[int, int], torch.Tensor] = {}

    def keep(a, b, i0, i1, values):
        found[(a, i0)] = values.clone()

    run(module, parameters, buffers, x, keep, workers)
    out = next(iter(found.values()))
    full = out.new_empty(count, x.shape[0], *out.shape[2:])
    for (a, i0), values in found.items():
        full[a : a + values.shape[0], i0 : i0 + values.shape[1]] = values
    return full


def _old_in_parallel(module, x, chunks, threads: int) -> bool:
    """Whether `threads` StackedForward chunks fit in memory at once (12 B per activation)."""
    if threads < 2 or len(chunks) < 2:
        return True
    largest = max((m1 - m0) * (i1 - i0) for m0, m1, i0, i1 in chunks)
    needed = 12 * activation_numbers(module, x) * largest * threads
    return needed <= OLD_PATH_MEMORY_FRACTION * free_memory_bytes(x.device)


def accuracy(module, parameters, buffers, x, y, tie_rule: str = DEFAULT_TIE_RULE, workers="auto"):
    """Accuracy in [0, 1] of each stacked network on (x, y) (evaluate's first half)."""
    return evaluate(module, parameters, buffers, x, y, tie_rule, workers)[0]
