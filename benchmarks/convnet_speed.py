"""convnet.c of two source trees against each other, both loaded in one process: the figures
behind a speed-only change to the kernel (docs/performance.md). Check the bits with
benchmarks/convnet_bits.py; this only times.

Run (not part of the test run), from the repository root, on an otherwise quiet machine:
    git worktree add --detach /tmp/old-tree <revision>
    PYTHONPATH=. .venv/bin/python benchmarks/convnet_speed.py /tmp/old-tree . [--networks 16]

Each tree's engine/philox.c and engine/convnet.c are compiled with engine/native.py's compiler and
flags into a library of their own. For each LeNet shape, `--networks` networks of random weights
(batch 2, noise images, random loss gradients) go through bs_convnet_gradients of each library,
alternating, `--rounds` times; the fastest round of each by this thread's CPU time, in
microseconds per image, their ratio, and whether both libraries wrote the same gradients.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from benchsuite.architectures.lenet import build_lenet
from benchsuite.engine import native
from benchsuite.engine.stacked_conv import native_ops, plan_conv

SHAPES = [((1, 28, 28), "1/6"), ((1, 28, 28), "2/6"), ((1, 28, 28), 1), ((3, 32, 32), 1)]
BATCH = 2
CLASSES = 2


def build(tree: Path, target: Path):
    """The tree's kernel, compiled as engine/native.py compiles this one."""
    compiler = native._compiler()
    if compiler is None:
        raise SystemExit("no C compiler here")
    engine = tree / "benchsuite" / "engine"
    native._build(compiler, target, tuple(engine / source.name for source in native.SOURCES))
    return native._bind(target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", type=Path, help="the tree before the change")
    parser.add_argument("new", type=Path, help="the tree after it")
    parser.add_argument("--networks", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=60)
    args = parser.parse_args()
    if native.library() is None:
        raise SystemExit("no compiled kernel here (engine/native.py)")
    with tempfile.TemporaryDirectory() as folder:
        trees = (args.old, args.new)
        libraries = [build(tree, Path(folder) / f"{i}.so") for i, tree in enumerate(trees)]
        for shape, width in SHAPES:
            compare(libraries, shape, width, args.networks, args.rounds)


def compare(libraries, shape, width, count: int, rounds: int) -> None:
    generator = torch.Generator().manual_seed(0)
    module = build_lenet(shape, width, bias=True)
    params = {
        name: 0.2 * torch.randn(count, *value.shape, generator=generator)
        for name, value in module.named_parameters()
    }
    grads = {name: torch.zeros_like(value) for name, value in params.items()}
    ops = native_ops(plan_conv(module), params, grads, shape)
    images = torch.randn(count, BATCH, *shape, generator=generator)
    loss_grad = torch.randn(count, BATCH, CLASSES, generator=generator)
    log_probs = torch.empty(count, BATCH, CLASSES)
    fastest, written = [float("inf")] * len(libraries), []
    for round_ in range(rounds):
        for i, lib in enumerate(libraries):
            started = time.thread_time()
            status = lib.bs_convnet_gradients(
                ops, len(ops), count, BATCH, images.data_ptr(), loss_grad.data_ptr(),
                log_probs.data_ptr(), CLASSES,
            )  # fmt: skip
            fastest[i] = min(fastest[i], time.thread_time() - started)
            if status != 0:
                raise SystemExit("convnet.c could not allocate its activations")
            if round_ == 0:
                written.append({name: g.clone() for name, g in grads.items()})
    same = all(torch.equal(written[0][name], written[1][name]) for name in grads)
    old, new = (seconds / (count * BATCH) * 1e6 for seconds in fastest)
    print(
        f"{shape[1]}x{shape[2]}x{shape[0]} w={width}: old {old:.1f} us an image, new {new:.1f},"
        f" old / new {old / new:.2f}x, same gradients: {same}", flush=True,
    )  # fmt: skip


if __name__ == "__main__":
    main()
