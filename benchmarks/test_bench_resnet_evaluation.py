"""Testing a ResNet4 population: the accuracies on convnet.c (bs_resnet_logits) beside
StackedForward (what ran before, and what runs without the compiled kernels), one run.

Run (not part of the test run):
    PYTHONPATH=. .venv/bin/python -m pytest benchmarks/test_bench_resnet_evaluation.py \
        --benchmark-only -s

Task: 16 ResNet4 networks (full depth) from Kaiming-uniform, eval mode, on 2,000 uniform random
28x28 images (the size of a Fashion-MNIST class pair's test set), engine.evaluation.evaluate on
one worker thread, the two sides alternating within each of ROUNDS rounds, the fastest round of
each. The accuracies of the two may differ where a logit pair is within float32 rounding of a
tie; the logits themselves are checked in tests/test_resnet_kernel.py. extra_info: the seconds,
their ratio, the machine.
"""

from __future__ import annotations

import time

import pytest
import torch
from machine import describe, torch_threads

from benchsuite.architectures.resnet4 import build_resnet4
from benchsuite.engine import evaluation, native
from benchsuite.engine.training import initial_parameters
from benchsuite.records import PriorSpec, kaiming_uniform_bound

NETWORKS = 16
IMAGES = 2000
ROUNDS = 2
KAIMING = PriorSpec(name="kaiming-uniform", family="uniform", scale=kaiming_uniform_bound)


@pytest.mark.parametrize("width", ["1/6", "2/6", "1/2", "1"])
def test_resnet_accuracies_on_the_kernel_beside_stacked_forward(benchmark, width):
    generator = torch.Generator().manual_seed(0)
    x, y = torch.rand(IMAGES, 1, 28, 28, generator=generator), torch.arange(IMAGES) % 2
    module = build_resnet4((1, 28, 28), width).eval()
    parameters, buffers = initial_parameters(module, KAIMING, 0, range(NETWORKS), "cpu")
    seconds: dict[str, list[float]] = {"stacked_forward": [], "kernel": []}

    def timed(side, work):
        started = time.perf_counter()
        work()
        seconds[side].append(time.perf_counter() - started)

    def old():
        with native.switched_off():
            evaluation.evaluate(module, parameters, buffers, x, y, workers=1)

    def run():
        timed("stacked_forward", old)
        timed("kernel", lambda: evaluation.evaluate(module, parameters, buffers, x, y, workers=1))

    with torch_threads(1):
        benchmark.pedantic(run, rounds=ROUNDS, iterations=1)
    best = {side: min(values) for side, values in seconds.items()}
    benchmark.extra_info.update(
        width=width, networks=NETWORKS, images=IMAGES,
        **{f"{side}_seconds": round(value, 3) for side, value in best.items()},
        ratio=round(best["stacked_forward"] / best["kernel"], 2), machine=describe(),
    )  # fmt: skip
    print(f"\nResNet4 w={width}: {benchmark.extra_info}")
