"""G&C throughput on the issue-3 task, beside the published approach, in the same run.

    .venv/bin/python -m pytest benchmarks --benchmark-only          (CPU here; CUDA when available)

Task: Fashion-MNIST T-shirt/top (0) vs sneaker (1), N = 16, training-set seed 200; paper MLP,
width 1; prior U[-1, 1]. Each benchmark decides a fixed budget of candidates (target never
reached), so candidates/s is budget / time. extra_info records candidates/s, accepted/s, the
machine and the ratio to the reference measured in this session at the same thread count: the
reference on `threads` intra-op threads, gnc on `threads` workers (each kernel on one thread);
the variants run at every CPU of this process. The reference runs first (file order).
"""

from __future__ import annotations

import pytest
import torch
from conftest import RESULTS
from machine import cpus, describe, thread_counts, torch_threads
from reference import reference_guess_and_check

from benchsuite.builtins.priors import benchsuite_priors
from benchsuite.engine import gnc
from benchsuite.records import SamplingRequest

UNIFORM = {p.name: p for p in benchsuite_priors()}["uniform"]


def _budgets(device: torch.device) -> dict[str, int]:
    if device.type == "cuda":
        return {"reference_chunk": 25_000, "reference_chunks": 8, "gnc": 8_000_000, "rounds": 2}
    return {"reference_chunk": 1_000, "reference_chunks": 6, "gnc": 120_000, "rounds": 3}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


@pytest.mark.parametrize("threads", thread_counts())
def test_reference_published_approach(benchmark, task, mlp, device, threads):
    x, y = task
    b = _budgets(device)
    outcome = {}

    def run():
        outcome["result"] = reference_guess_and_check(
            mlp, x, y, b["reference_chunk"], b["reference_chunks"]
        )

    with torch_threads(threads):
        benchmark.pedantic(run, rounds=b["rounds"], iterations=1, warmup_rounds=1)
    candidates, accepted, _ = outcome["result"]
    seconds = benchmark.stats.stats.median
    RESULTS[("reference", threads)] = candidates / seconds
    benchmark.extra_info.update(
        candidates_per_s=candidates / seconds,
        accepted_per_s=accepted / seconds,
        device=str(device),
        chunk=b["reference_chunk"],
        threads=threads,
        machine=describe(),
    )
    print(f"\nreference, {threads} threads: {candidates / seconds:,.0f} candidates/s on {device}")


VARIANTS = [
    ({}, "default"),
    ({"output_swap": False}, "no-swap"),
    ({"early_rejection": True}, "staged"),
    ({"early_rejection": False}, "unstaged"),
    ({"fast_path": False, "early_rejection": False, "output_swap": False}, "generic-vmap-no-swap"),
]
CASES = [({}, t, f"default-{t}-threads") for t in thread_counts()] + [
    (variant, cpus(), name) for variant, name in VARIANTS[1:]
]


@pytest.mark.parametrize("variant, threads", [c[:2] for c in CASES], ids=[c[2] for c in CASES])
def test_gnc_paper_mlp(benchmark, task, mlp, device, variant, threads):
    x, y = task
    b = _budgets(device)
    budget = b["gnc"]
    if variant.get("fast_path") is False:
        budget //= 10 if device.type == "cpu" else 40
    options = {"reuse_nested": False, "cpu_threads": threads, **variant}
    outcome = {}

    def run():
        request = SamplingRequest(
            module=mlp, x_train=x, y_train=y, prior=UNIFORM, target=10**12,
            max_candidates=budget, seed=1234, device=device, options=options,
        )
        outcome["population"] = gnc.guess_and_check(request)
        _sync(device)

    benchmark.pedantic(run, rounds=b["rounds"], iterations=1, warmup_rounds=1)
    population = outcome["population"]
    seconds = benchmark.stats.stats.median
    rate = population.candidates_tried / seconds
    info = {
        "candidates_per_s": rate,
        "accepted_per_s": population.size / seconds,
        "acceptance": population.size / population.candidates_tried,
        "device": str(device),
        "options": str(variant),
        "threads": threads,
        "machine": describe(),
    }
    if ("reference", threads) in RESULTS:
        info["ratio_to_reference"] = rate / RESULTS[("reference", threads)]
    benchmark.extra_info.update(info)
    ratio = f", {info['ratio_to_reference']:.1f}x reference" if "ratio_to_reference" in info else ""
    accepted = population.size / seconds
    print(
        f"\ngnc {variant or 'default'}, {threads} threads: {rate:,.0f} candidates/s, "
        f"{accepted:,.1f} accepted/s{ratio}"
    )
