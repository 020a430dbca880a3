"""G&C on ResNet4 (BatchNorm) beside the published approach, in the same run (issue 16, item 2).

    .venv/bin/python -m pytest benchmarks/test_bench_gnc_resnet.py --benchmark-only

Task: the issue-3 task (Fashion-MNIST, 28x28, N = 16); ResNet4 at w = 1/2 and 1/6; prior
U[-1, 1]. Four contestants, all on one thread, alternating within every round; the fastest round
of each counts (extra_info: candidates/s and the ratios to the reference code's approach):
- reference: benchmarks/reference_resnet_gnc.py (grouped-convolution model of M networks, the
  statistics pass, then the accuracy pass), at M = 64 and 256 (the faster one counts);
- reference-lean: the same with one train-mode forward per chunk;
- gnc: the engine's default (BatchNormPlan, engine/batchnorm_gnc.py);
- gnc-vmap: the engine with fast_path=False (the generic vmap path it replaced).
"""

from __future__ import annotations

import time

import pytest
from machine import describe, torch_threads
from reference_resnet_gnc import GroupedResNet4, reference_resnet_guess_and_check

from benchsuite.architectures.resnet4 import build_resnet4
from benchsuite.builtins.priors import benchsuite_priors
from benchsuite.engine import gnc
from benchsuite.records import SamplingRequest

UNIFORM = {p.name: p for p in benchsuite_priors()}["uniform"]
ROUNDS = 5
REFERENCE_CANDIDATES = 256  # per contestant and round
GNC_CANDIDATES = {"gnc": 4096, "gnc-vmap": 1024}  # each call pays its set-up once


@pytest.mark.parametrize("width", ["1/2", "1/6"])
def test_gnc_resnet4_against_reference(benchmark, task, width):
    x, y = task
    x, y = x.cpu(), y.cpu()
    w = 0.5 if width == "1/2" else 1 / 6
    module = build_resnet4(tuple(x.shape[1:]), width=w)
    references = {m: GroupedResNet4(x.shape[1], w, m) for m in (64, 256)}
    rates: dict[str, list[float]] = {}

    def record(name, candidates, seconds):
        rates.setdefault(name, []).append(candidates / seconds)

    def engine(name, options):
        request = SamplingRequest(
            module=module, x_train=x, y_train=y, prior=UNIFORM, target=10**12,
            max_candidates=GNC_CANDIDATES[name], seed=1234, device="cpu",
            options={"reuse_nested": False, "cpu_threads": 1, **options},
        )  # fmt: skip
        started = time.perf_counter()
        population = gnc.guess_and_check(request)
        record(name, population.candidates_tried, time.perf_counter() - started)

    def run():
        for m, model in references.items():
            chunks = max(1, REFERENCE_CANDIDATES // m)
            for lean, name in ((False, "reference"), (True, "reference-lean")):
                candidates, _, seconds = reference_resnet_guess_and_check(
                    model, UNIFORM, x, y, chunks, lean=lean
                )
                record(name, candidates, seconds)
        engine("gnc", {})
        engine("gnc-vmap", {"fast_path": False})

    with torch_threads(1):
        benchmark.pedantic(run, rounds=ROUNDS, warmup_rounds=1, iterations=1)
    best = {name: max(values) for name, values in rates.items()}
    info = {f"{name}_candidates_per_s": round(rate, 1) for name, rate in best.items()}
    for name in ("gnc", "gnc-vmap"):
        info[f"{name}_ratio_to_reference"] = round(best[name] / best["reference"], 2)
        info[f"{name}_ratio_to_reference_lean"] = round(best[name] / best["reference-lean"], 2)
    info["gnc_ratio_to_vmap"] = round(best["gnc"] / best["gnc-vmap"], 2)
    benchmark.extra_info.update(
        width=width, threads=1, n_train=x.shape[0], machine=describe(), **info
    )
    print(f"\nResNet4 w={width}: " + ", ".join(f"{k} {v}" for k, v in info.items()))
