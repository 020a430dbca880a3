"""SGD network-steps/s of the many-model training engine beside the published approach, same run.

Run (not part of the default test run):
    .venv/bin/python -m pytest benchmarks/test_bench_training.py --benchmark-only

Task: the paper MLP at width 1 on the issue-3 task (benchmarks/conftest.py `task`: Fashion-MNIST
T-shirt/top vs sneaker, N = 16, training-set seed 200), batch 2, SGD lr 0.01, 100 networks.
A network-step is one optimizer step of one network; rates use the fastest round (least disturbed
by other processes on the machine). The reference (benchmarks/reference_training.py) is 100
networks as one model of grouped 1x1 convolutions with the batch repeated across networks.
Both sides run at each thread count of machine.thread_counts() (one, and every CPU of this
process): the reference on that many intra-op threads, the engine on that many workers with
single-threaded kernels (engine/threads.py). Each engine benchmark records its rate, its ratio to
the reference at the same thread count and the machine in extra_info. Uses CUDA when available.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe, thread_counts, torch_threads
from reference_training import GroupedConvolutionMLPs, train_grouped

from benchsuite.builtins.optimizers import benchsuite_optimizers
from benchsuite.engine import threads as engine_threads
from benchsuite.engine.batches import round_orders, steps_per_epoch
from benchsuite.engine.training import (
    TrainingSettings,
    _round_size_cap,
    initial_parameters,
    train_networks,
    train_population,
)
from benchsuite.records import PriorSpec, kaiming_uniform_bound

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
NETWORKS = 100
N_TRAIN = 16
BATCH_SIZE = 2
EPOCHS = 5 if DEVICE.type == "cpu" else 20  # per timed round of the kernel benchmarks
PROTOCOL_EPOCHS = 60  # the end-to-end benchmark trains as suites/bench/sgd-mlp.yaml does
ROUNDS = 7
SGD = next(spec for spec in benchsuite_optimizers() if spec.name == "sgd")
KAIMING = PriorSpec(name="kaiming-uniform", family="uniform", scale=kaiming_uniform_bound)
RATES: dict[tuple[str, int], float] = {}


def paper_mlp() -> nn.Sequential:
    return nn.Sequential(
        nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(196, 120, bias=False), nn.ReLU(),
        nn.Linear(120, 60, bias=False), nn.ReLU(),
        nn.Linear(60, 30, bias=False), nn.ReLU(),
        nn.Linear(30, 12, bias=False), nn.ReLU(),
        nn.Linear(12, 2, bias=False),
    )  # fmt: skip


def synchronize():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def record(benchmark, name: str, network_steps: int, threads: int) -> float:
    rate = network_steps / benchmark.stats.stats.min
    RATES[(name, threads)] = rate
    benchmark.extra_info.update(
        device=str(DEVICE), threads=threads, networks=NETWORKS, n_train=N_TRAIN,
        batch_size=BATCH_SIZE, epochs=EPOCHS, network_steps=network_steps,
        network_steps_per_second=round(rate), machine=describe(),
    )  # fmt: skip
    if ("reference", threads) in RATES and name != "reference":
        benchmark.extra_info["ratio_to_reference"] = round(rate / RATES[("reference", threads)], 2)
    return rate


@pytest.mark.parametrize("threads", thread_counts())
def test_reference_grouped_convolutions(benchmark, task, threads):
    images, labels = task
    model = GroupedConvolutionMLPs(NETWORKS, generator=torch.Generator().manual_seed(0)).to(DEVICE)
    generator = torch.Generator().manual_seed(1)

    def run():
        steps = train_grouped(
            model, images, labels, EPOCHS, BATCH_SIZE, lr=0.01, generator=generator
        )
        synchronize()
        return steps

    with torch_threads(threads):
        steps = benchmark.pedantic(run, rounds=ROUNDS, warmup_rounds=1, iterations=1)
    record(benchmark, "reference", NETWORKS * steps, threads)


@pytest.mark.parametrize("threads", thread_counts())
@pytest.mark.parametrize("networks_per_round", ["auto", 25, 50, 100])
def test_engine_stacked_training(benchmark, task, networks_per_round, threads):
    """train_networks on 100 networks in rounds of networks_per_round: the training kernels alone."""
    images, labels = task
    module = paper_mlp().to(DEVICE)
    settings = TrainingSettings(networks_per_round=networks_per_round)
    per_round = min(NETWORKS, _round_size_cap(module, settings, N_TRAIN, DEVICE))
    rounds = []
    for start in range(0, NETWORKS, per_round):
        attempts = range(start, min(NETWORKS, start + per_round))
        parameters, buffers = initial_parameters(module, KAIMING, 0, attempts, DEVICE)
        orders = round_orders(0, attempts, N_TRAIN, EPOCHS, "independent")
        rounds.append((parameters, buffers, orders))

    def run():
        for parameters, buffers, orders in rounds:
            train_networks(
                module,
                images,
                labels,
                SGD,
                dict(SGD.defaults),
                parameters,
                buffers,
                orders,
                BATCH_SIZE,
                workers=threads,
            )
        synchronize()

    benchmark.pedantic(run, rounds=ROUNDS, warmup_rounds=1, iterations=1)
    benchmark.extra_info["networks_per_round"] = per_round
    record(
        benchmark,
        f"engine-{networks_per_round}",
        NETWORKS * EPOCHS * steps_per_epoch(N_TRAIN, BATCH_SIZE),
        threads,
    )


@pytest.mark.parametrize("threads", thread_counts())
def test_engine_population_end_to_end(benchmark, task, threads):
    """train_population with the protocol (60 epochs): init, orders, training, acceptance; 100 wanted."""
    images, labels = task
    module = paper_mlp().to(DEVICE)
    trained = []

    def run():
        calls = []
        train_population(
            module, images, labels, SGD, dict(SGD.defaults), KAIMING,
            TrainingSettings(epochs=PROTOCOL_EPOCHS), target=NETWORKS, seed=0, device=DEVICE,
            progress=lambda accepted, networks: calls.append(networks),
        )  # fmt: skip
        synchronize()
        trained.append(calls[-1])

    with engine_threads.limited(threads):
        benchmark.pedantic(run, rounds=3, warmup_rounds=1, iterations=1)
    steps = PROTOCOL_EPOCHS * steps_per_epoch(N_TRAIN, BATCH_SIZE)
    benchmark.extra_info.update(
        networks_trained=trained[-1], population_seconds=benchmark.stats.stats.min
    )
    record(benchmark, "population", trained[-1] * steps, threads)
    benchmark.extra_info["epochs"] = PROTOCOL_EPOCHS


CONV_NETWORKS = 32  # one round; the conv and vmap paths split it alike (engine/parts.py)
CONV_EPOCHS = 4


@pytest.mark.parametrize("width", ["1/6", "1"])
def test_conv_path_against_vmap(benchmark, task, width):
    """LeNet (28x28, biases, SGD) on the "conv" path against the generic "vmap" path, one thread
    each, alternating within every round; extra_info: both rates and their ratio (fastest rounds)."""
    from benchsuite.architectures.lenet import build_lenet

    images, labels = task
    module = build_lenet((1, 28, 28), width, bias=True).to(DEVICE)
    attempts = range(CONV_NETWORKS)
    parameters, buffers = initial_parameters(module, KAIMING, 0, attempts, DEVICE)
    orders = round_orders(0, attempts, N_TRAIN, CONV_EPOCHS, "independent")
    seconds: dict[str, list[float]] = {"conv": [], "vmap": []}

    def train(path: str) -> None:
        started = time.perf_counter()
        train_networks(
            module, images, labels, SGD, dict(SGD.defaults), parameters, buffers, orders,
            BATCH_SIZE, path=path, workers=1,
        )  # fmt: skip
        synchronize()
        seconds[path].append(time.perf_counter() - started)

    def run():
        train("vmap")
        train("conv")

    with torch_threads(1):
        benchmark.pedantic(run, rounds=5, warmup_rounds=1, iterations=1)
    network_steps = CONV_NETWORKS * CONV_EPOCHS * steps_per_epoch(N_TRAIN, BATCH_SIZE)
    conv, vmap = (network_steps / min(seconds[p][1:]) for p in ("conv", "vmap"))
    benchmark.extra_info.update(
        device=str(DEVICE), threads=1, width=width, networks=CONV_NETWORKS, epochs=CONV_EPOCHS,
        network_steps=network_steps, conv_network_steps_per_second=round(conv),
        vmap_network_steps_per_second=round(vmap), ratio_to_vmap=round(conv / vmap, 2),
        machine=describe(),
    )  # fmt: skip
