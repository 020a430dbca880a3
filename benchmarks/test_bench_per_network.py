"""Optimizers that couple a network's entries (benchsuite-zoo's LAMB, Shampoo, Muon, ...): the
"per_network_stacked" path (the stack's forward and backward, one optimizer per network) beside
"per_network" (a module per network through autograd), same run.

Run (not part of the default test run; needs the benchsuite-zoo plugin, which setup.sh installs):
    .venv/bin/python -m pytest benchmarks/test_bench_per_network.py --benchmark-only

Task: the issue-3 task (benchmarks/conftest.py `task`: Fashion-MNIST 28x28, N = 16), the paper MLP
at width 1/6 and LeNet at width 1/6 with biases, Kaiming-uniform init, batch 2, each optimizer's
declared defaults, 20 networks (a zoo cell's population), 2 epochs. Both paths on one thread,
alternating within every round; rates (network-steps per second) from the fastest round of
each. extra_info: both rates, their ratio, the largest difference of the trained weights (float32
rounding, grown by training), the machine.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe, torch_threads

from benchsuite.architectures.lenet import build_lenet
from benchsuite.architectures.mlp import build_mlp
from benchsuite.engine.batches import round_orders, steps_per_epoch
from benchsuite.engine.training import initial_parameters, train_networks
from benchsuite.records import PriorSpec, kaiming_uniform_bound

zoo = pytest.importorskip("benchsuite_zoo")

NETWORKS = 20
EPOCHS = 2
BATCH_SIZE = 2
ROUNDS = 3
KAIMING = PriorSpec(name="kaiming-uniform", family="uniform", scale=kaiming_uniform_bound)
OPTIMIZERS = ["lamb", "adamp", "novograd", "prodigy", "shampoo", "muon"]
ARCHITECTURES = {
    "mlp-1/6": lambda: build_mlp((1, 28, 28), "1/6", 4, bias=True),
    "lenet-1/6": lambda: build_lenet((1, 28, 28), "1/6", bias=True),
}
SETTINGS = {"shampoo": {"preconditioning_compute_steps": 10}}  # as suites/zoo sets it


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_per_network_stacked_against_per_network(benchmark, task, architecture, name):
    spec = next(s for s in zoo.optimizer_specs() if s.name == name)
    hyperparameters = {**spec.defaults, **SETTINGS.get(name, {})}
    images, labels = (t.cpu() for t in task)
    module = ARCHITECTURES[architecture]()
    attempts = range(NETWORKS)
    parameters, buffers = initial_parameters(module, KAIMING, 0, attempts, "cpu")
    orders = round_orders(0, attempts, images.shape[0], EPOCHS, "independent")
    paths = ("per_network_stacked", "per_network")
    seconds: dict[str, list[float]] = {path: [] for path in paths}
    trained = {}

    def run():
        for path in paths:
            started = time.perf_counter()
            trained[path], _ = train_networks(
                module, images, labels, spec, hyperparameters, parameters, buffers, orders,
                BATCH_SIZE, path=path, workers=1,
            )  # fmt: skip
            seconds[path].append(time.perf_counter() - started)

    with torch_threads(1):
        benchmark.pedantic(run, rounds=ROUNDS, warmup_rounds=1, iterations=1)
    network_steps = NETWORKS * EPOCHS * steps_per_epoch(images.shape[0], BATCH_SIZE)
    rates = {path: network_steps / min(seconds[path][1:]) for path in paths}
    difference = max(
        float((trained[paths[0]][key] - trained[paths[1]][key]).abs().nan_to_num(0).max())
        for key in trained[paths[1]]
    )
    benchmark.extra_info.update(
        optimizer=name, architecture=architecture, networks=NETWORKS, epochs=EPOCHS,
        batch_size=BATCH_SIZE, threads=1, network_steps=network_steps,
        **{f"{path}_network_steps_per_second": round(rate) for path, rate in rates.items()},
        ratio=round(rates["per_network_stacked"] / rates["per_network"], 2),
        largest_difference=difference, machine=describe(),
    )  # fmt: skip
