"""Test-set evaluation of a LeNet population: engine.evaluation beside stacked.evaluate, one run.

Run (not part of the test run):
    PYTHONPATH=. .venv/bin/python -m pytest benchmarks/test_bench_evaluation.py --benchmark-only -s

Task: the Fashion-MNIST T-shirt/top vs sneaker test set (2,000 images; random images of its
shape if the dataset is missing), 100 networks (a study cell) of LeNet width 1/6 and 1 drawn from
Kaiming-uniform, with the dead networks a trained population has. Each round times, in turn:
- "old": stacked.evaluate on one intra-op thread, what the runner ran before (engine/threads.py's
  one_cpu_thread);
- "new, 1 worker": engine.evaluation.evaluate on one thread (the same thread count as "old");
- "new" (the benchmark's own stats): the shipped policy, one worker per CPU of this process.
Quiet (whatever else the machine runs: see the load average) and under a competing load of one
busy-loop process per CPU, started here. Every variant's accuracies and ties are asserted equal
to the old ones. extra_info: wall and process-CPU seconds of each variant per round, the ratios
of the fastest rounds (wall), the machine (benchmarks/machine.py).
"""

from __future__ import annotations

import contextlib
import time

import pytest
import torch
from machine import competing_load, cpus, describe

from benchsuite.architectures.lenet import build_lenet
from benchsuite.engine import evaluation
from benchsuite.engine.threads import one_cpu_thread
from benchsuite.records import PriorSpec, kaiming_uniform_bound
from benchsuite.stacked import evaluate as old_evaluate
from benchsuite.stacked import init_stacked

NETWORKS = 100
TEST_IMAGES = 2000
ROUNDS = 2
KAIMING = PriorSpec(name="kaiming-uniform", family="uniform", scale=kaiming_uniform_bound)


@pytest.fixture(scope="module")
def test_set():
    try:
        from benchsuite.plugins import default_registry
        from benchsuite.tasks import build_task, load_splits

        spec = default_registry().dataset("fashion-mnist")
        task = build_task(spec, load_splits(spec), (0, 7), 16, 200)
        return task.x_test[:TEST_IMAGES], task.y_test[:TEST_IMAGES]
    except Exception as error:  # noqa: BLE001 - timing needs only the shapes
        print(f"fashion-mnist unavailable ({error!r}): random images")
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(TEST_IMAGES, 1, 28, 28, generator=generator)
        return x, torch.randint(0, 2, (TEST_IMAGES,), generator=generator)


def population(width):
    """LeNets with biases, as SGD trains them (before 2026-12-03 this measured them without, the
    one case the wide path then took: docs/performance.md)."""
    module = build_lenet((1, 28, 28), width, bias=True).eval()
    parameters, buffers = init_stacked(module, KAIMING, list(range(NETWORKS)), "cpu")
    generator = torch.Generator().manual_seed(1)
    for name, value in parameters.items():
        if name.endswith("bias"):
            value.copy_(torch.rand(value.shape, generator=generator) * 0.2 - 0.1)
    parameters["11.weight"][::7] = 0.0  # dead networks: every point tied
    parameters["11.bias"][::7] = 0.0
    return module, parameters, buffers


def _timed(function):
    wall, cpu = time.perf_counter(), time.process_time()
    result = function()
    return result, time.perf_counter() - wall, time.process_time() - cpu


@pytest.mark.parametrize("load", ["quiet", "loaded"])
@pytest.mark.parametrize("width", ["1/6", "1"])
def test_evaluation_beside_the_old_path(benchmark, test_set, width, load):
    x, y = test_set
    module, parameters, buffers = population(width)
    state = (module, parameters, buffers, x, y)
    evaluation.evaluate(*(state[:3]), x[:300], y[:300], workers=1)  # warm: the shape checks
    rounds: list[dict] = []

    def old():
        with one_cpu_thread("cpu"):
            return old_evaluate(*state)

    def setup():
        rounds.append({"load_average_before": describe()["load_average_1min"]})
        expected, *rounds[-1]["old"] = _timed(old)
        got, *rounds[-1]["new_1_worker"] = _timed(lambda: evaluation.evaluate(*state, workers=1))
        assert all(torch.equal(a, b) for a, b in zip(got, expected))
        rounds[-1]["expected"] = expected
        return (), {}

    def new():
        got, *rounds[-1]["new"] = _timed(lambda: evaluation.evaluate(*state))
        assert all(torch.equal(a, b) for a, b in zip(got, rounds[-1]["expected"]))

    with competing_load() if load == "loaded" else contextlib.nullcontext():
        benchmark.pedantic(new, setup=setup, rounds=ROUNDS, warmup_rounds=0, iterations=1)
    fastest = {k: min(r[k][0] for r in rounds) for k in ("old", "new_1_worker", "new")}
    benchmark.extra_info.update(
        machine=describe(),
        load=load,
        busy_loop_processes=cpus() if load == "loaded" else 0,
        networks=NETWORKS,
        test_images=int(x.shape[0]),
        workers=cpus(),
        rounds=[
            {
                key: [round(v, 3) for v in value] if isinstance(value, list) else value
                for key, value in r.items()
                if key != "expected"
            }
            for r in rounds
        ],  # [wall s, process CPU s] per variant
        ratio_same_threads=round(fastest["old"] / fastest["new_1_worker"], 2),
        ratio_shipped=round(fastest["old"] / fastest["new"], 2),
    )
    print(
        f"\nLeNet w={width} {load}: old {fastest['old']:.2f} s, new 1 worker "
        f"{fastest['new_1_worker']:.2f} s ({fastest['old'] / fastest['new_1_worker']:.1f}x), "
        f"new {cpus()} workers {fastest['new']:.2f} s ({fastest['old'] / fastest['new']:.1f}x)"
    )
