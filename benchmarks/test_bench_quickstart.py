"""The quickstart suite end to end, beside the same suite through the earlier per-step path.

    .venv/bin/python -m pytest benchmarks/test_bench_quickstart.py --benchmark-only -s

What runs: `run_suite(suites/quickstart.yaml)` into a fresh folder with a fresh registry (so an
empty G&C decision cache) and the dataset caches cleared, as `benchsuite run` does in a fresh
process (imports excluded).
- "batched" (the benchmark's own stats): today's engine: cells that differ only in class pair and
  training set trained in one stack, flat optimizer state with written-out SGD/Adam steps,
  batches gathered ahead, evaluation on one CPU thread (engine/threads.py).
- "per-step" reference (its times in extra_info): the earlier path: cell by cell, one gather and
  one torch.optim tensor per parameter per step, evaluation on torch's default threads.
The two alternate (pedantic's untimed setup runs the reference right before each timed round),
so both see the same load; extra_info holds every pair's times, their ratios and the machine's
load average. Both databases are compared row by row (everything but timings must be equal).
BENCHSUITE_QUICKSTART_ROUNDS sets the number of pairs (default 2).
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import time
from pathlib import Path

import torch

from benchsuite.engine import threads, training
from benchsuite.plugins import load_registry
from benchsuite.runner import run_suite
from benchsuite.suite import load_suite
from benchsuite.tasks import clear_caches

SUITE = Path(__file__).resolve().parent.parent / "suites" / "quickstart.yaml"
ROUNDS = int(os.environ.get("BENCHSUITE_QUICKSTART_ROUNDS", "2"))
COMPARED = {
    "cells": "SELECT cell_id, models_found, candidates_tried, epochs, exhausted, seed FROM cells"
    " ORDER BY cell_id",
    "networks": "SELECT cell_id, model_index, found_at, train_acc, test_acc FROM networks"
    " ORDER BY cell_id, model_index",
    "network_metrics": "SELECT cell_id, model_index, metric, value FROM network_metrics"
    " ORDER BY cell_id, model_index, metric",
}


def _run(out: Path, per_step: bool) -> float:
    """One run from cold caches (a fresh registry, so a fresh G&C sampler with an empty
    nested-decision cache; loaded splits cleared), as a fresh `benchsuite run` would start; only
    the imports are already paid."""
    clear_caches()
    registry = load_registry()
    suite = load_suite(SUITE, registry)
    started = time.perf_counter()
    if per_step:
        saved, threads.ENABLED = threads.ENABLED, False
        try:
            with training.per_step_path():
                run_suite(suite, out, registry, device="cpu", group_cells=False)
        finally:
            threads.ENABLED = saved
    else:
        run_suite(suite, out, registry, device="cpu")
    return time.perf_counter() - started


def _rows(database: Path) -> dict[str, list]:
    with sqlite3.connect(database) as connection:
        return {name: connection.execute(sql).fetchall() for name, sql in COMPARED.items()}


def test_quickstart_batched_beside_per_step(benchmark):
    folder = Path(tempfile.mkdtemp(prefix="bench-quickstart-"))
    pairs: list[dict] = []
    counter = iter(range(1_000_000))

    def setup():
        index = next(counter)
        reference = folder / f"per-step-{index}"
        pairs.append(
            {
                "load_before": os.getloadavg()[0],
                "per_step_s": _run(reference, per_step=True),
                "reference": reference,
                "batched": folder / f"batched-{index}",
            }
        )
        return (pairs[-1]["batched"],), {}

    def timed(out):
        pairs[-1]["batched_s"] = _run(out, per_step=False)

    benchmark.pedantic(timed, setup=setup, rounds=ROUNDS, warmup_rounds=0, iterations=1)
    for pair in pairs:
        assert _rows(pair["batched"] / "results.sqlite") == _rows(
            pair["reference"] / "results.sqlite"
        )
    ratios = [pair["per_step_s"] / pair["batched_s"] for pair in pairs]
    benchmark.extra_info.update(
        threads=torch.get_num_threads(),
        cpus=os.cpu_count(),
        pairs=[
            {
                "per_step_s": round(pair["per_step_s"], 2),
                "batched_s": round(pair["batched_s"], 2),
                "load_average_1min_before": round(pair["load_before"], 2),
            }
            for pair in pairs
        ],
        ratio_per_pair=[round(r, 2) for r in ratios],
        ratio_of_fastest=round(
            min(p["per_step_s"] for p in pairs) / min(p["batched_s"] for p in pairs), 2
        ),
    )
    seconds = [(round(p["per_step_s"], 1), round(p["batched_s"], 1)) for p in pairs]
    print(f"\nquickstart (per-step s, batched s): {seconds}; ratios {[round(r, 2) for r in ratios]}")
