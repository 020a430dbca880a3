"""SGD network-steps/s of the "conv" training path beside the published approach, LeNet, same run.

Run (not part of the default test run):
    .venv/bin/python -m pytest benchmarks/test_bench_lenet_training.py --benchmark-only

Task: the issue-3 task (benchmarks/conftest.py `task`: Fashion-MNIST 28x28, N = 16), and for the
32x32x3 case 16 noise images (the speed of neither side depends on the pixels), LeNet with biases
at each width, batch 2, SGD lr 0.01, 64 networks. The reference (benchmarks/reference_lenet.py)
is the 64 networks as one model of grouped convolutions with the batch repeated across them,
autograd and torch.optim.SGD; the engine is engine.training.train_networks on the "conv" path
(plain SGD's steps fused into convnet.c), and "stepped" the same a step at a time (the update in
torch; stacked_conv.steps_one_at_a_time). All on one thread (the reference one intra-op thread,
the engine one worker), alternating within every round; rates from the fastest round of each, by
wall clock and by this thread's CPU time (less moved by other jobs on a shared machine).
extra_info: the rates, the ratios, the machine.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe, torch_threads
from reference_lenet import GroupedLeNets
from reference_training import train_grouped

from benchsuite.architectures.lenet import build_lenet
from benchsuite.builtins.optimizers import benchsuite_optimizers
from benchsuite.engine.batches import round_orders, steps_per_epoch
from benchsuite.engine.stacked_conv import steps_one_at_a_time
from benchsuite.engine.training import initial_parameters, train_networks
from benchsuite.records import PriorSpec, kaiming_uniform_bound

NETWORKS = 64
N_TRAIN = 16
BATCH_SIZE = 2
EPOCHS = 2  # per timed round
ROUNDS = 5
SGD = next(spec for spec in benchsuite_optimizers() if spec.name == "sgd")
KAIMING = PriorSpec(name="kaiming-uniform", family="uniform", scale=kaiming_uniform_bound)
CASES = [
    ((1, 28, 28), "1/6"), ((1, 28, 28), "2/6"), ((1, 28, 28), "3/6"), ((1, 28, 28), "4/6"),
    ((1, 28, 28), "1"), ((3, 32, 32), "1"),
]  # fmt: skip


def noise_task(shape):
    generator = torch.Generator().manual_seed(0)
    return torch.randn(N_TRAIN, *shape, generator=generator), torch.arange(N_TRAIN) % 2


@pytest.mark.parametrize("shape, width", CASES, ids=[f"{s[1]}px-{s[0]}ch-w{w}" for s, w in CASES])
def test_conv_path_against_the_reference(benchmark, task, shape, width):
    images, labels = task if shape == (1, 28, 28) else noise_task(shape)
    images, labels = images.cpu(), labels.cpu()
    w = 1 if width == "1" else width
    module = build_lenet(shape, w, bias=True)
    attempts = range(NETWORKS)
    parameters, buffers = initial_parameters(module, KAIMING, 0, attempts, "cpu")
    orders = round_orders(0, attempts, N_TRAIN, EPOCHS, "independent")
    reference = GroupedLeNets(NETWORKS, shape, w, generator=torch.Generator().manual_seed(0))
    shuffles = torch.Generator().manual_seed(1)
    sides = ("reference", "engine", "stepped")
    wall: dict[str, list[float]] = {side: [] for side in sides}
    cpu: dict[str, list[float]] = {side: [] for side in sides}

    def timed(side: str, train) -> None:
        started, started_cpu = time.perf_counter(), time.thread_time()
        train()
        wall[side].append(time.perf_counter() - started)
        cpu[side].append(time.thread_time() - started_cpu)

    def run():
        timed("reference", lambda: train_grouped(
            reference, images, labels, EPOCHS, BATCH_SIZE, lr=0.01, generator=shuffles
        ))  # fmt: skip
        timed("engine", lambda: train_networks(
            module, images, labels, SGD, dict(SGD.defaults), parameters, buffers, orders,
            BATCH_SIZE, path="conv", workers=1,
        ))  # fmt: skip
        with steps_one_at_a_time():  # the kernel a step at a time, the update in torch
            timed("stepped", lambda: train_networks(
                module, images, labels, SGD, dict(SGD.defaults), parameters, buffers, orders,
                BATCH_SIZE, path="conv", workers=1,
            ))  # fmt: skip

    with torch_threads(1):
        benchmark.pedantic(run, rounds=ROUNDS, warmup_rounds=1, iterations=1)
    network_steps = NETWORKS * EPOCHS * steps_per_epoch(N_TRAIN, BATCH_SIZE)
    rates = {
        f"{side}_{clock}": network_steps / min(seconds[side][1:])  # [0]: the warm-up round
        for clock, seconds in (("wall", wall), ("cpu", cpu))
        for side in sides
    }
    benchmark.extra_info.update(
        threads=1, input_shape=list(shape), width=width, networks=NETWORKS, n_train=N_TRAIN,
        batch_size=BATCH_SIZE, epochs=EPOCHS, network_steps=network_steps,
        **{f"{name}_network_steps_per_second": round(rate) for name, rate in rates.items()},
        ratio_to_reference=round(rates["engine_wall"] / rates["reference_wall"], 2),
        ratio_to_reference_cpu=round(rates["engine_cpu"] / rates["reference_cpu"], 2),
        fused_to_stepped=round(rates["engine_wall"] / rates["stepped_wall"], 2),
        stepped_to_reference=round(rates["stepped_wall"] / rates["reference_wall"], 2),
        machine=describe(),
    )  # fmt: skip
