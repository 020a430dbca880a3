"""G&C on CPU with the compiled Philox kernel (engine/native.py) against the numpy path, same run.

    .venv/bin/python -m pytest benchmarks/test_bench_native.py --benchmark-only

The issue-3 task (Fashion-MNIST 0 vs 7, N = 16), prior U[-1, 1], one worker thread, a fixed budget
of candidates (target never reached): the paper MLP at width 1 (the leading-Linear path) and
LeNet at width 1/6 (draws.generate_range). Both sides alternate within each of 5 rounds and the
fastest round of each by thread CPU time is kept (time.thread_time: other processes on a shared
machine change it little); `extra_info` holds candidates per CPU-second and the ratio. The
benchmark asserts that both sides decided the same candidates and accepted the same networks.
"""

from __future__ import annotations

import os
import time

import pytest
import torch
from machine import describe

from benchsuite.architectures.lenet import build_lenet
from benchsuite.builtins.priors import benchsuite_priors
from benchsuite.engine import gnc, native
from benchsuite.records import SamplingRequest

UNIFORM = {p.name: p for p in benchsuite_priors()}["uniform"]
ROUNDS = 5
BUDGETS = {"mlp": 8_192, "lenet": 16_384}


def _run(module, task, budget):
    x, y = task
    request = SamplingRequest(
        module=module, x_train=x, y_train=y, prior=UNIFORM, target=10**12, max_candidates=budget,
        seed=1234, device="cpu", options={"reuse_nested": False, "cpu_threads": 1},
    )  # fmt: skip
    start = time.thread_time()
    population = gnc.guess_and_check(request)
    return time.thread_time() - start, population


@pytest.mark.parametrize("network", ["mlp", "lenet"])
def test_kernel_against_numpy_path(benchmark, task, mlp, network):
    if native.library() is None:
        pytest.skip("no C compiler here: the engine runs numpy's path only")
    module = mlp.cpu() if network == "mlp" else build_lenet((1, 28, 28), 1 / 6, bias=False)
    cpu_task = tuple(t.cpu() for t in task)
    budget = BUDGETS[network]
    seconds = {True: [], False: []}
    results = {}

    def run(on: bool, candidates: int):
        if on:
            assert native.library() is not None
            return _run(module, cpu_task, candidates)
        with native.switched_off():
            assert native.library() is None
            return _run(module, cpu_task, candidates)

    def rounds():
        for on in (True, False):  # warm-up: plans, swap check, first-call costs
            run(on, 512)
        for _ in range(ROUNDS):
            for on in (True, False):
                spent, results[on] = run(on, budget)
                seconds[on].append(spent)

    benchmark.pedantic(rounds, rounds=1, iterations=1)
    fast, slow = results[True], results[False]
    assert fast.candidates_tried == slow.candidates_tried == budget
    assert torch.equal(torch.as_tensor(fast.found_at), torch.as_tensor(slow.found_at))
    rate = {on: budget / min(seconds[on]) for on in seconds}
    benchmark.extra_info.update(
        candidates_per_cpu_s_kernel=rate[True],
        candidates_per_cpu_s_numpy=rate[False],
        ratio=rate[True] / rate[False],
        load=os.getloadavg()[0],
        machine=describe(),
    )
    print(
        f"\n{network}: kernel {rate[True]:,.0f}, numpy {rate[False]:,.0f} candidates per CPU-s: "
        f"{rate[True] / rate[False]:.2f}x"
    )
