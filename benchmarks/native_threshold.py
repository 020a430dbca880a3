"""Where convnet.c stops paying against the patches formulation: the figures behind
engine.stacked_conv.NATIVE_MAX_CONV_MACS (docs/performance.md).

Run (not part of the test run), on an otherwise quiet machine:
    PYTHONPATH=. .venv/bin/python benchmarks/native_threshold.py [--networks 64] [--rounds 4]

For each LeNet shape, SGD (batch 2, 2 epochs, N = 16 noise images, biases) of the same networks
through the "conv" path twice per round, once with the rule lifted (convnet.c) and once with it
at zero (the patches formulation), alternating; the fastest wall-clock round of each. Prints the
convolution multiply-adds per image and patches time / native time (above 1: the kernel pays).
"""

from __future__ import annotations

import argparse
import time

import torch

from benchsuite.architectures.lenet import build_lenet
from benchsuite.builtins.optimizers import benchsuite_optimizers
from benchsuite.engine import native, stacked_conv
from benchsuite.engine.batches import round_orders
from benchsuite.engine.training import initial_parameters, train_networks
from benchsuite.records import PriorSpec, kaiming_uniform_bound

SGD = next(spec for spec in benchsuite_optimizers() if spec.name == "sgd")
KAIMING = PriorSpec(name="kaiming-uniform", family="uniform", scale=kaiming_uniform_bound)
SHAPES = [
    ((1, 28, 28), 1), ((1, 28, 28), "8/6"), ((1, 28, 28), 2), ((1, 28, 28), "16/6"),
    ((3, 32, 32), "4/6"), ((3, 32, 32), 1), ((3, 32, 32), "8/6"), ((3, 32, 32), "10/6"),
    ((3, 32, 32), 2),
]  # fmt: skip


def conv_macs(module, shape) -> int:
    channels, height, width = shape
    total = 0
    for layer in module:
        if isinstance(layer, torch.nn.Conv2d):
            kh, kw = layer.kernel_size
            height, width = height - kh + 1, width - kw + 1
            total += layer.out_channels * height * width * layer.in_channels * kh * kw
        elif isinstance(layer, torch.nn.MaxPool2d):
            height, width = height // 2, width // 2
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--networks", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    if native.library() is None:
        raise SystemExit("no compiled kernel here (engine/native.py)")
    torch.set_num_threads(1)
    rule = stacked_conv.NATIVE_MAX_CONV_MACS
    try:
        for shape, width in SHAPES:
            module = build_lenet(shape, width, bias=True)
            x = torch.randn(16, *shape, generator=torch.Generator().manual_seed(0))
            y = torch.arange(16) % 2
            attempts = range(args.networks)
            parameters, buffers = initial_parameters(module, KAIMING, 0, attempts, "cpu")
            orders = round_orders(0, attempts, 16, 2, "independent")
            best = {"native": float("inf"), "patches": float("inf")}
            for _ in range(args.rounds):
                for side, bound in (("native", 10**12), ("patches", 0)):
                    stacked_conv.NATIVE_MAX_CONV_MACS = bound
                    start = time.perf_counter()
                    train_networks(
                        module, x, y, SGD, {"lr": 0.01}, parameters, buffers, orders, 2,
                        path="conv",
                    )  # fmt: skip
                    best[side] = min(best[side], time.perf_counter() - start)
            ratio = best["patches"] / best["native"]
            print(f"{shape} w={width}: {conv_macs(module, shape):,} multiply-adds, {ratio:.2f}x")
    finally:
        stacked_conv.NATIVE_MAX_CONV_MACS = rule


if __name__ == "__main__":
    main()
