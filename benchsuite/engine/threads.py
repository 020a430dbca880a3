"""Threads on CPU: one torch thread per kernel for the small stacked kernels, parallelism across
networks or candidates in our own workers.

Why: the networks here are tiny, so torch's intra-op parallelism splits kernels of microseconds
across OpenMP threads whose barriers cost more than the work, and on a shared machine every
barrier waits for a descheduled thread (measured on the 2-core machine under load: the
quickstart's evaluation took 20.2 s with two threads and 1.7 s with one). The policy:
- evaluation (accuracy on training and test sets, metrics): one thread (`one_cpu_thread`);
- gradient training: the ThreadChooser (engine/stacked_mlp.py) times one thread against all and
  re-checks now and then;
- G&C: its own worker threads (`cpu_threads`), torch single-threaded inside
  (`torch_single_threaded`).
Results do not depend on the thread count (tests/test_training.py, tests/test_run.py).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

import torch


@contextlib.contextmanager
def torch_single_threaded(device: torch.device):
    """CPU: run torch ops on one thread (our workers give the parallelism). OpenMP barriers inside
    thousands of small ops cost milliseconds each when the machine is busy."""
    if device.type != "cpu":
        yield
        return
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def cpu_threads(option) -> int:
    """Worker threads: `option`, or for "auto" the CPUs this process may use."""
    if option == "auto":
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not on Linux
            return max(1, os.cpu_count() or 1)
    return max(1, int(option))


ENABLED = True  # False: evaluation keeps the caller's thread count (the benchmarks' reference)


@contextlib.contextmanager
def one_cpu_thread(device):
    """On CPU, torch ops inside the block run on one intra-op thread; the caller's count returns."""
    if not ENABLED or torch.device(device).type != "cpu":
        yield
        return
    saved = torch.get_num_threads()
    if saved != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if saved != 1:
            torch.set_num_threads(saved)


def spread(function: Callable, items: Iterable, workers: int, device="cpu") -> list:
    """[function(item) for item in items] over up to `workers` threads, each running torch on
    one intra-op thread (set before the threads start: they begin with the process's count)."""
    items = list(items)
    workers = max(1, min(int(workers), len(items)))
    with torch_single_threaded(torch.device(device)):
        if workers == 1:
            return [function(item) for item in items]
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(function, items))
