"""The per-network path (optimizers that are neither elementwise nor stack-aware) against the stacked
path, in one process, variants interleaved: the figures of docs/optimizer-contract.md.

Run (not part of the test run):
    PYTHONPATH=. .venv/bin/python benchmarks/per_network_threads.py [--repeats 3]

Task: 10 networks x 120 steps (N = 16, batch 2, 15 epochs) of the paper MLP at width 1 with biases
on the benchmarks' Fashion-MNIST task (random inputs of its shape if the data are missing).
Variants, for Adam (and Prodigy when pytorch-optimizer is installed):
- before: the earlier per-network loop (one network after another, torch's default intra-op
  threads, `step(closure)` as its only evaluation), kept here as the reference;
- before, 1 thread: the same loop with torch.set_num_threads(1);
- per_network: train_networks's per-network path (single-threaded kernels; worker threads kept
  when a timed wave of them beats one thread, engine.training._spread);
- per_network, workers: the same with the workers always kept (PARALLEL_MARGIN = inf);
- per_network, 1 worker: the same path without worker threads;
- stacked: the same optimizer declared elementwise, trained in one stack ("mlp" path); for
  Prodigy that declaration is wrong (its step reduces over each tensor), so only its time counts.
Each figure is the fastest of `repeats` rounds (least disturbed by other processes); ratios are
to the stacked time of the same optimizer. The results of the single-threaded per-network
variants are checked equal to each other (and said whether "before", multi-threaded, agrees).
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import time

import torch
import torch.nn.functional as F

from benchsuite.engine import training
from benchsuite.engine.batches import batch_indices, round_orders
from benchsuite.engine.training import initial_parameters, train_networks
from benchsuite.plugins import default_registry
from benchsuite.records import Hyperparameter, OptimizerSpec, PriorSpec, kaiming_uniform_bound
from benchsuite.suite import build_module

NETWORKS, N_TRAIN, EPOCHS, BATCH = 10, 16, 15, 2  # 8 steps per epoch: 120 steps
KAIMING = PriorSpec(name="kaiming-uniform", family="uniform", scale=kaiming_uniform_bound)


def task():
    registry = default_registry()
    try:
        from benchsuite.tasks import build_task, load_splits

        dataset = registry.dataset("fashion-mnist")
        built = build_task(dataset, load_splits(dataset), (0, 7), N_TRAIN, 200)
        x, y = built.x_train, built.y_train.long()
    except Exception:  # noqa: BLE001 - the timing needs only the shapes
        generator = torch.Generator().manual_seed(0)
        x, y = torch.randn(N_TRAIN, 1, 28, 28, generator=generator), torch.arange(N_TRAIN) % 2
    module = build_module(registry.architecture("mlp"), (1, 28, 28), 1, None, True)
    return module, x, y


def before_loop(module, x, y, factory, hyperparameters, parameters, orders):
    """The per-network loop as it was: one network at a time, step(closure) its only evaluation."""
    steps = batch_indices(orders, BATCH)
    trained = {name: torch.empty_like(value) for name, value in parameters.items()}
    for k in range(NETWORKS):
        network = copy.deepcopy(module).train()
        with torch.no_grad():
            for name, value in network.named_parameters():
                value.copy_(parameters[name][k])
        optimizer = factory(list(network.parameters()), **hyperparameters)
        for indices in steps:
            xb, yb = x[indices[k]], y[indices[k]]

            def closure(network=network, optimizer=optimizer, xb=xb, yb=yb):
                optimizer.zero_grad()
                loss = F.cross_entropy(network(xb), yb)
                loss.backward()
                return loss

            optimizer.step(closure)
        with torch.no_grad():
            for name, value in network.named_parameters():
                trained[name][k] = value
    return trained


def optimizers():
    found = [("adam", torch.optim.Adam, {"lr": 0.001})]
    try:
        from pytorch_optimizer import Prodigy

        found.append(("prodigy", Prodigy, {"lr": 1.0}))
    except ImportError:
        pass
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    repeats = parser.parse_args().repeats
    module, x, y = task()
    parameters, buffers = initial_parameters(module, KAIMING, 0, range(NETWORKS), "cpu")
    orders = round_orders(0, range(NETWORKS), N_TRAIN, EPOCHS, "independent")
    cores = len(os.sched_getaffinity(0))
    threads = torch.get_num_threads()
    print(f"{NETWORKS} networks x {EPOCHS * N_TRAIN // BATCH} steps, paper MLP width 1; "
          f"{cores} CPUs, torch default {threads} threads, load {os.getloadavg()[0]:.1f}")  # fmt: skip
    for name, factory, hyperparameters in optimizers():
        measure(name, factory, hyperparameters, module, x, y, parameters, buffers, orders, repeats)


def measure(name, factory, hyperparameters, module, x, y, parameters, buffers, orders, repeats):
    declared = {k: Hyperparameter(float, v) for k, v in hyperparameters.items()}
    per_network = OptimizerSpec(name=name, factory=factory, hyperparameters=declared)
    stacked = OptimizerSpec(name=name, factory=factory, hyperparameters=declared, elementwise=True)

    def run_before(one_thread):
        saved = torch.get_num_threads()
        if one_thread:
            torch.set_num_threads(1)
        try:
            return before_loop(module, x, y, factory, hyperparameters, parameters, orders)
        finally:
            torch.set_num_threads(saved)

    def run(spec, margin=training.PARALLEL_MARGIN, **options):
        saved, training.PARALLEL_MARGIN = training.PARALLEL_MARGIN, margin
        try:
            return train_networks(
                module, x, y, spec, hyperparameters, parameters, buffers, orders, BATCH, **options
            )[0]
        finally:
            training.PARALLEL_MARGIN = saved

    variants = {
        "before": lambda: run_before(False),
        "before, 1 thread": lambda: run_before(True),
        "per_network": lambda: run(per_network),
        "per_network, workers": lambda: run(per_network, margin=math.inf),
        "per_network, 1 worker": lambda: run(per_network, workers=1),
        "stacked": lambda: run(stacked),
    }
    best = {label: float("inf") for label in variants}
    results = {}
    for _ in range(repeats):
        for label, variant in variants.items():
            started = time.perf_counter()
            results[label] = variant()
            best[label] = min(best[label], time.perf_counter() - started)
    reference = results["before, 1 thread"]
    for label in ("per_network", "per_network, workers", "per_network, 1 worker"):
        for key, value in reference.items():
            assert torch.equal(results[label][key], value), (name, label, key)
    agrees = all(torch.equal(results["before"][k], v) for k, v in reference.items())
    print(f"{name}: (load {os.getloadavg()[0]:.1f}; multi-threaded 'before' "
          f"{'equals' if agrees else 'differs from'} the single-threaded networks)")  # fmt: skip
    for label, seconds in best.items():
        print(f"  {label:24s} {seconds:8.3f} s  {seconds / best['stacked']:8.1f}x stacked")


if __name__ == "__main__":
    main()
