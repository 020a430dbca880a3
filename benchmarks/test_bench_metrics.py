"""Cost of each built-in metric: seconds per 1,000 networks, beside the test-set evaluation every
cell already pays, measured in the same run (docs/diagnostics.md's cost table).

Run (not part of the default test run; one thread, as the table states):
    OMP_NUM_THREADS=1 .venv/bin/python -m pytest benchmarks/test_bench_metrics.py --benchmark-only -s

Task: Fashion-MNIST T-shirt/top vs sneaker (benchmarks/conftest.py), N = 32 training images (the
largest N of suites/diagnostics) and the pair's 2,000 test images; random stand-ins of the same
shapes when the dataset is absent. Networks: NETWORKS drawn from the Kaiming-uniform prior (a
metric's cost does not depend on the weights), the paper MLP at width 1 and LeNet at width 1/6,
with biases (as gradient methods train them). Each benchmark records seconds per 1,000 networks
(fastest round) and its ratio to `evaluate` (test accuracy of the same networks) in extra_info;
the table is printed at the end with -s.
"""

from __future__ import annotations

import pytest
import torch

from benchsuite.architectures import build_lenet, build_mlp
from benchsuite.plugins import load_registry
from benchsuite.records import MetricInput
from benchsuite.stacked import evaluate, init_stacked

NETWORKS = 100
N_TRAIN = 32
ROUNDS = 3
REGISTRY = load_registry(include_entry_points=False)
METRICS = sorted(REGISTRY.records["metric"])
ARCHITECTURES = {
    "mlp-1": lambda: build_mlp((1, 28, 28), width=1, bias=True),
    "lenet-1/6": lambda: build_lenet((1, 28, 28), width="1/6", bias=True),
}
SECONDS: dict[tuple[str, str], float] = {}


def _task():
    try:
        from benchsuite.records import DataOptions
        from benchsuite.tasks import build_task, load_splits

        spec = REGISTRY.dataset("fashion-mnist")
        task = build_task(spec, load_splits(spec, DataOptions()), (0, 7), N_TRAIN, 200)
        return task.x_train, task.y_train, task.x_test, task.y_test
    except Exception as error:  # noqa: BLE001 - any failure: random stand-ins of the same shapes
        print(f"fashion-mnist unavailable ({error!r}): random images")
        generator = torch.Generator().manual_seed(0)
        return (torch.randn(N_TRAIN, 1, 28, 28, generator=generator), torch.arange(N_TRAIN) % 2,
                torch.randn(2000, 1, 28, 28, generator=generator), torch.arange(2000) % 2)  # fmt: skip


@pytest.fixture(scope="module")
def inputs():
    x_train, y_train, x_test, y_test = _task()
    made = {}
    for name, build in ARCHITECTURES.items():
        module = build().eval()
        prior = REGISTRY.prior("kaiming-uniform")
        parameters, buffers = init_stacked(module, prior, list(range(NETWORKS)), "cpu")
        initial, _ = init_stacked(module, prior, list(range(NETWORKS, 2 * NETWORKS)), "cpu")
        made[name] = MetricInput(
            module=module, parameters=parameters, buffers=buffers, x_train=x_train, y_train=y_train,
            x_test=x_test, y_test=y_test, initial_parameters=initial,
        )  # fmt: skip
    yield made
    _print_table()


def _record(benchmark, architecture: str, name: str) -> None:
    seconds = benchmark.stats.stats.min * 1000 / NETWORKS
    SECONDS[(architecture, name)] = seconds
    benchmark.extra_info.update(networks=NETWORKS, n_train=N_TRAIN, threads=torch.get_num_threads(),
                                seconds_per_1000_networks=round(seconds, 4))  # fmt: skip
    reference = SECONDS.get((architecture, "evaluate"))
    if reference and name != "evaluate":
        benchmark.extra_info["ratio_to_evaluate"] = round(seconds / reference, 2)


@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
def test_evaluate_reference(benchmark, inputs, architecture):
    """The reference: test accuracy of the population, which every cell computes anyway."""
    data = inputs[architecture]
    benchmark.pedantic(
        evaluate, args=(data.module, data.parameters, data.buffers, data.x_test, data.y_test),
        rounds=ROUNDS, iterations=1, warmup_rounds=1,
    )  # fmt: skip
    _record(benchmark, architecture, "evaluate")


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
def test_metric_cost(benchmark, inputs, architecture, metric):
    data = inputs[architecture]
    compute = REGISTRY.metric(metric).compute
    values = benchmark.pedantic(compute, args=(data,), rounds=ROUNDS, iterations=1, warmup_rounds=1)
    assert values.shape == (NETWORKS,)
    _record(benchmark, architecture, metric)


def _print_table() -> None:
    if not SECONDS:
        return
    names = [n for n in ["evaluate", *METRICS] if any((a, n) == key for key in SECONDS for a in ARCHITECTURES)]
    print(f"\nseconds per 1,000 networks ({NETWORKS} networks, N = {N_TRAIN}, {torch.get_num_threads()} thread(s)); x = ratio to evaluate")
    print("| metric | " + " | ".join(f"{a} s | {a} x" for a in ARCHITECTURES) + " |")
    print("|---|" + "---:|" * (2 * len(ARCHITECTURES)))
    for name in names:
        cells = []
        for a in ARCHITECTURES:
            seconds, reference = SECONDS.get((a, name)), SECONDS.get((a, "evaluate"))
            cells += [f"{seconds:.3g}" if seconds is not None else "", f"{seconds / reference:.3g}" if seconds and reference else ""]
        print(f"| {name} | " + " | ".join(cells) + " |")
