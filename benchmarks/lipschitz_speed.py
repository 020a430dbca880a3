"""The Lipschitz estimate's input-gradient norms: the written-out sequential backward
(metrics/input_gradients.py, one network at a time) against the vmapped autograd path it replaces
for the LeNet family, in one process, alternating within rounds, both on one torch thread.

Run (not part of the test run):
    PYTHONPATH=. .venv/bin/python benchmarks/lipschitz_speed.py [--networks 16] [--rounds 3]

Task: `networks` networks drawn with engine.training.initial_parameters (Kaiming-uniform, biases)
on 2,000 Fashion-MNIST-shaped 28x28 images (uniform random pixels). Each figure is the fastest
of `rounds` rounds; the ratio is vmap / sequential; the largest relative difference of the norms
is printed too.
"""

from __future__ import annotations

import argparse
import time

import torch

from benchsuite.architectures.lenet import build_lenet
from benchsuite.architectures.mlp import build_mlp
from benchsuite.engine.training import initial_parameters
from benchsuite.metrics import normalized
from benchsuite.records import PriorSpec, kaiming_uniform_bound

KAIMING = PriorSpec(name="kaiming-uniform", family="uniform", scale=kaiming_uniform_bound)
CASES = [
    ("lenet", "1/6", "2c-3f"), ("lenet", "2/6", "2c-3f"), ("lenet", "3/6", "2c-3f"),
    ("lenet", "1", "2c-3f"), ("lenet", "2/6", "1c-1f"), ("lenet", "2/6", "2c-1f"),
    ("lenet", "2/6", "2c-2f"), ("lenet", "1/6", "2c-1f"), ("mlp", "1", None),
]  # fmt: skip


def timed(function):
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def measured(module, parameters, buffers, x, rounds: int):
    """Fastest vmap and new times over `rounds` alternating rounds, and their last results."""
    old_best = new_best = float("inf")
    for _ in range(rounds):
        t_old, old = timed(
            lambda: normalized.vmapped_gradient_norms(module, parameters, buffers, x, 32, 512)
        )
        t_new, new = timed(lambda: normalized.input_gradient_norms(module, parameters, buffers, x))
        old_best, new_best = min(old_best, t_old), min(new_best, t_new)
    return old_best, old, new_best, new


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--networks", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=2000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    x = torch.rand(args.images, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    for family, width, depth in CASES:
        if family == "mlp":
            module = build_mlp((1, 28, 28), width=width, bias=True)
        else:
            module = build_lenet((1, 28, 28), width=width, depth=depth, bias=True)
        p, b = initial_parameters(module, KAIMING, 0, range(args.networks), "cpu")
        old_best, old, new_best, new = measured(module, p, b, x, args.rounds)
        difference = float(((new - old).abs() / old.abs().clamp_min(1e-30)).max())
        print(
            f"{family} w={width} {depth or ''}: vmap {old_best:.2f}s  new {new_best:.2f}s  "
            f"ratio {old_best / new_best:.2f}x  max rel diff {difference:.1e}",
            flush=True,
        )


if __name__ == "__main__":
    main()
