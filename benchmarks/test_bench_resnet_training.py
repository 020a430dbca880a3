"""SGD network-steps/s of ResNet4 on the "resnet" path beside the published approach, same run.

Run (not part of the default test run):
    .venv/bin/python -m pytest benchmarks/test_bench_resnet_training.py --benchmark-only

Task: the issue-3 task (benchmarks/conftest.py `task`: Fashion-MNIST, N = 16, 28x28), and for
32x32x3 the same labels with normal noise images of that shape (the arithmetic does not depend
on the pixels). ResNet4 at width 1/2, full depth, SGD lr 0.01, batch 2, 32 networks, 2 epochs per
round. Three sides, all on one thread, alternating within each of ROUNDS rounds, the fastest
round of each (the least disturbed by other processes on the shared machine):
- reference: benchmarks/reference_resnet.py (the 32 networks as one model of grouped convolutions
  and BatchNorm over all their channels, the batch repeated across networks, autograd and one
  torch.optim.SGD);
- vmap: train_networks on the generic vmap + autograd path (what ResNet4 took before);
- torch: the hand-written "resnet" path (engine/stacked_resnet.py) in its torch formulation
  (im2col and bmm; what it runs without the compiled kernels, native.switched_off);
- resnet: the "resnet" path as shipped: convnet.c's bs_resnet_gradients where it is built.
extra_info: the four rates, ratio_to_reference, ratio_to_vmap, ratio_to_torch, the machine and
its load.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe, torch_threads
from reference_resnet import GroupedResNet4s
from reference_training import train_grouped

from benchsuite.architectures.resnet4 import build_resnet4
from benchsuite.builtins.optimizers import benchsuite_optimizers
from benchsuite.engine import native
from benchsuite.engine.batches import round_orders, steps_per_epoch
from benchsuite.engine.training import initial_parameters, train_networks
from benchsuite.records import PriorSpec, kaiming_uniform_bound

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
NETWORKS = 32
EPOCHS = 2
BATCH_SIZE = 2
ROUNDS = 5
SGD = next(spec for spec in benchsuite_optimizers() if spec.name == "sgd")
KAIMING = PriorSpec(name="kaiming-uniform", family="uniform", scale=kaiming_uniform_bound)
WIDTHS = {"1/2": 0.5, "1": 1.0}


def synchronize():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def inputs(task, shape):
    images, labels = task
    if tuple(images.shape[1:]) == shape:
        return images, labels
    noise = torch.randn(images.shape[0], *shape, generator=torch.Generator().manual_seed(0))
    return noise.to(images.device), labels


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)], ids=["28px", "32px3"])
@pytest.mark.parametrize("width", ["1/2", "1"])
def test_resnet_path_against_reference_and_vmap(benchmark, task, shape, width):
    images, labels = inputs(task, shape)
    module = build_resnet4(shape, width).to(DEVICE)
    attempts = range(NETWORKS)
    parameters, buffers = initial_parameters(module, KAIMING, 0, attempts, DEVICE)
    orders = round_orders(0, attempts, images.shape[0], EPOCHS, "independent")
    reference = GroupedResNet4s(
        NETWORKS, shape[0], WIDTHS[width], generator=torch.Generator().manual_seed(0)
    ).to(DEVICE)
    generator = torch.Generator().manual_seed(1)
    seconds: dict[str, list[float]] = {"reference": [], "vmap": [], "torch": [], "resnet": []}

    def timed(side: str, work) -> None:
        started = time.perf_counter()
        work()
        synchronize()
        seconds[side].append(time.perf_counter() - started)

    def engine(path: str):
        return lambda: train_networks(
            module, images, labels, SGD, dict(SGD.defaults), parameters, buffers, orders,
            BATCH_SIZE, path=path, workers=1,
        )  # fmt: skip

    def run():
        timed("reference", lambda: train_grouped(
            reference, images, labels, EPOCHS, BATCH_SIZE, lr=0.01, generator=generator
        ))  # fmt: skip
        timed("vmap", engine("vmap"))
        with native.switched_off():
            timed("torch", engine("resnet"))
        timed("resnet", engine("resnet"))

    with torch_threads(1):
        benchmark.pedantic(run, rounds=ROUNDS, warmup_rounds=1, iterations=1)
    network_steps = NETWORKS * EPOCHS * steps_per_epoch(images.shape[0], BATCH_SIZE)
    rates = {side: network_steps / min(values[1:]) for side, values in seconds.items()}
    benchmark.extra_info.update(
        device=str(DEVICE), threads=1, shape=list(shape), width=width, networks=NETWORKS,
        epochs=EPOCHS, network_steps=network_steps,
        **{f"{side}_network_steps_per_second": round(rate) for side, rate in rates.items()},
        ratio_to_reference=round(rates["resnet"] / rates["reference"], 2),
        ratio_to_vmap=round(rates["resnet"] / rates["vmap"], 2),
        ratio_to_torch=round(rates["resnet"] / rates["torch"], 2),
        vmap_to_reference=round(rates["vmap"] / rates["reference"], 2),
        machine=describe(),
    )  # fmt: skip
    print(f"\n{shape} w={width}: {benchmark.extra_info}")
