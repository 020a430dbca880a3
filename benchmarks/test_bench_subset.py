"""subset-mcmc's pCN sweeps beside the plain expressions they replace, same run, same bits.

Run (not part of the default test run):
    .venv/bin/python -m pytest benchmarks/test_bench_subset.py --benchmark-only

At MLP width 1 (32,904 weights) a sweep is mostly elementwise passes over the [particles,
weights] state: the noise, the proposal, the prior's erf transform, the accept step; the networks
themselves are a small share. The engine (engine/subset.py `_pcn_moves`) writes them into
buffers reused across sweeps and copies accepted rows by index; the reference below is the
straightforward code (every expression a new tensor, `torch.where` over all rows), which was
the engine's until 2026-12-02. Both run on the benchmark task (Fashion-MNIST N = 16, the paper
MLP at width 1, U[-1, 1]) from the same particles and generator seed, alternating, on one thread;
the benchmark asserts the same particles bit for bit and records the ratio in extra_info.
"""

from __future__ import annotations

import math
import time

import pytest
import torch
from conftest import load_task, paper_mlp
from machine import describe, torch_threads

from benchsuite.builtins.priors import benchsuite_priors
from benchsuite.engine import subset
from benchsuite.engine.layout import build_layout

PARTICLES = 256
MOVES = 4
ROUNDS = 5


def plain_parameters(reparametrization, z):
    count, where, out = z.shape[0], {n: (a, b) for n, a, b in reparametrization.slices}, {}
    for entry in reparametrization.layout.entries:
        a, b = where[entry.name]
        values = z[:, a:b]
        if entry.kind == "uniform":
            values = entry.center + entry.scale * torch.erf(values * subset.SQRT_HALF)
        else:
            values = entry.scale * values
        out[entry.name] = values.reshape(count, *entry.shape)
    return out


def plain_moves(z, reparametrization, fit, level, moves, step, target, generator):
    for _ in range(moves):
        noise = torch.randn(z.shape, generator=generator)
        proposal = math.sqrt(1.0 - step * step) * z + step * noise
        ok = fit.satisfies(plain_parameters(reparametrization, proposal), level)
        z = torch.where(ok.unsqueeze(1), proposal, z)
        rate = float(ok.double().mean())
        step = min(subset.MAX_STEP, max(subset.MIN_STEP, step * math.exp(rate - target)))
    return z


@pytest.fixture(scope="module")
def sweep_inputs():
    x, y = load_task(16, "cpu")
    module = paper_mlp()
    prior = next(p for p in benchsuite_priors() if p.name == "uniform")
    reparametrization = subset.GaussianReparametrization.of(build_layout(module, prior))
    fit = subset.NestedFit(module, x, y.long(), "argmax", PARTICLES)
    z = torch.randn(PARTICLES, reparametrization.dimensions, generator=torch.Generator().manual_seed(0))
    return z, reparametrization, fit, subset.Level(2)


def test_pcn_sweeps_against_plain_expressions(benchmark, sweep_inputs):
    z, reparametrization, fit, level = sweep_inputs
    times = {"engine": [], "plain": []}

    def engine():
        generator = torch.Generator().manual_seed(1)
        return subset._pcn_moves(z, reparametrization, fit, level, MOVES, 0.2, 0.3, generator)[0]

    def plain():
        return plain_moves(z, reparametrization, fit, level, MOVES, 0.2, 0.3, torch.Generator().manual_seed(1))

    with torch_threads(1):
        for _ in range(ROUNDS):
            for name, run in (("plain", plain), ("engine", engine)):
                started = time.perf_counter()
                result = run()
                times[name].append(time.perf_counter() - started)
                if name == "engine":
                    assert torch.equal(result, plain_result)  # the same particles, bit for bit
                else:
                    plain_result = result
        benchmark.pedantic(engine, rounds=1, iterations=1)
    ratio = min(times["plain"]) / min(times["engine"])
    benchmark.extra_info.update(
        {"particles": PARTICLES, "moves": MOVES, "weights": reparametrization.dimensions,
         "plain_seconds": min(times["plain"]), "engine_seconds": min(times["engine"]),
         "ratio_to_plain": round(ratio, 2), **describe()}
    )  # fmt: skip
    print(f"\npCN sweeps: plain {min(times['plain']):.2f} s, engine {min(times['engine']):.2f} s, {ratio:.2f}x")
