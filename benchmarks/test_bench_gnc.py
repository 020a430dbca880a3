"""G&C throughput on the issue-3 task, beside the published approach, in the same run.

    .venv/bin/python -m pytest benchmarks --benchmark-only          (CPU here; CUDA when available)

Task: Fashion-MNIST T-shirt/top (0) vs sneaker (1), N = 16, training-set seed 200; paper MLP,
width 1; prior U[-1, 1]. Each benchmark decides a fixed budget of candidates (target never
reached), so candidates/s is budget / time. extra_info records candidates/s, accepted/s and the
ratio to the reference measured in this session. The reference runs first (file order).
"""

from __future__ import annotations

import pytest
import torch
from conftest import RESULTS
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


def test_reference_published_approach(benchmark, task, mlp, device):
    x, y = task
    b = _budgets(device)
    outcome = {}

    def run():
        outcome["result"] = reference_guess_and_check(
            mlp, x, y, b["reference_chunk"], b["reference_chunks"]
        )

    benchmark.pedantic(run, rounds=b["rounds"], iterations=1, warmup_rounds=1)
    candidates, accepted, _ = outcome["result"]
    seconds = benchmark.stats.stats.median
    RESULTS["reference"] = candidates / seconds
    benchmark.extra_info.update(
        candidates_per_s=candidates / seconds,
        accepted_per_s=accepted / seconds,
        device=str(device),
        chunk=b["reference_chunk"],
    )
    print(f"\nreference: {candidates / seconds:,.0f} candidates/s on {device}")


@pytest.mark.parametrize(
    "variant",
    [
        {},
        {"output_swap": False},
        {"early_rejection": True},
        {"early_rejection": False},
        {"fast_path": False, "early_rejection": False, "output_swap": False},
    ],
    ids=["default", "no-swap", "staged", "unstaged", "generic-vmap-no-swap"],
)
def test_gnc_paper_mlp(benchmark, task, mlp, device, variant):
    x, y = task
    b = _budgets(device)
    budget = b["gnc"]
    if variant.get("fast_path") is False:
        budget //= 10 if device.type == "cpu" else 40
    options = {"reuse_nested": False, **variant}
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
    }
    if "reference" in RESULTS:
        info["ratio_to_reference"] = rate / RESULTS["reference"]
    benchmark.extra_info.update(info)
    ratio = f", {info['ratio_to_reference']:.1f}x reference" if "ratio_to_reference" in info else ""
    accepted = population.size / seconds
    print(
        f"\ngnc {variant or 'default'}: {rate:,.0f} candidates/s, {accepted:,.1f} accepted/s{ratio}"
    )
