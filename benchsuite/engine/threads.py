"""Threads on CPU, one policy for every engine path: work split across networks (or candidates)
over worker threads, one per CPU this process may use (os.sched_getaffinity), and every torch
kernel on one intra-op thread.

Why: the networks here are tiny, so torch's intra-op parallelism splits kernels of microseconds
across OpenMP threads whose barriers cost more than the work, and on a shared machine every
barrier waits for a descheduled thread (the 2-core machine under load: LeNet w=1/2 training ran
35 network-steps/s with two intra-op threads and 423 with one; the quickstart's evaluation 20.2 s
and 1.7 s). A worker that is descheduled delays only its own networks. One thread per kernel
also makes results independent of the machine: ResNet4's BatchNorm statistics, reduced over
two OpenMP threads, trained to other bits than over one. Where each path splits:
- G&C (engine/gnc.py): ranges of draws per worker (`cpu_threads`, `torch_single_threaded`);
- training (engine/training.py, engine/parts.py): sub-stacks of a round per worker; the
  per-network path: networks per worker, kept when a timed wave beats one thread;
- evaluation (engine/evaluation.py): sub-chunks of networks per worker (`spread`);
- metrics: the runner computes them on one thread (`one_cpu_thread`), not yet split.
Results do not depend on the number of workers (tests/test_training.py, tests/test_gnc.py,
tests/test_evaluation.py, tests/test_run.py).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

import torch

from benchsuite.engine import stopping


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


LIMIT: int | None = None  # at most this many workers for "auto" (`limited`)
SHARE: int | None = None  # set by share_cpus in a worker that shares the CPUs with others


def share_cpus(threads: int, torch_threads: int | None = None) -> None:
    """This process is one of several workers on the same CPUs (the `processes` and `ray`
    executors): "auto" means `threads` workers here (1 when there are as many workers as CPUs),
    so workers do not oversubscribe the cores. `torch_threads` overrides torch's count outside
    `spread`: a forked worker must keep torch on one thread (OpenMP's thread pool does not
    survive fork: a second thread deadlocks, seen in the first kernel)."""
    global SHARE
    SHARE = max(1, int(threads))
    torch.set_num_threads(SHARE if torch_threads is None else max(1, int(torch_threads)))


def cpu_threads(option) -> int:
    """Worker threads: `option`, or for "auto" the CPUs this process may use (its share of them
    in a worker, share_cpus; at most LIMIT)."""
    if option == "auto":
        available = SHARE if SHARE is not None else usable_cpus()
        return min(available, LIMIT) if LIMIT is not None else available
    return max(1, int(option))


def usable_cpus() -> int:
    """The CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def limited(workers: int):
    """Inside the block, "auto" means at most `workers` workers on every path (benchmarks measure
    both sides of a ratio on the same number of threads this way)."""
    global LIMIT
    saved, LIMIT = LIMIT, max(1, int(workers))
    try:
        yield
    finally:
        LIMIT = saved


ENABLED = True  # False: one_cpu_thread keeps the caller's thread count (the benchmarks' reference)


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


def worker_pool(workers: int) -> ThreadPoolExecutor:
    """Worker threads that each set torch (and so MKL) to one thread in themselves: MKL keeps its
    thread count per thread (torch sets it with mkl_set_num_threads_local), and a new thread
    starts from MKL's default. Under MKL_CBWR (benchsuite/__init__.py) a product's bits depend on
    that count, so without this a network computed on a worker differed from it computed on the
    caller's thread (measured on the AMD EPYC). Each worker serves the calling thread: a stop
    requested for it stops them too (engine/stopping.py)."""
    return _WorkerPool(workers, threading.get_ident())


class _WorkerPool(ThreadPoolExecutor):
    def __init__(self, workers: int, owner: int):
        super().__init__(workers, initializer=self._start, initargs=(owner,))

    @staticmethod
    def _start(owner: int) -> None:
        torch.set_num_threads(1)
        stopping.serve(owner)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        super().shutdown(wait, cancel_futures=cancel_futures)
        if wait:
            stopping.released(thread.ident for thread in getattr(self, "_threads", ()))


def spread(function: Callable, items: Iterable, workers: int, device="cpu") -> list:
    """[function(item) for item in items] over up to `workers` threads, each running torch on
    one intra-op thread (set before the threads start: they begin with the process's count)."""
    items = list(items)
    workers = max(1, min(int(workers), len(items)))
    with torch_single_threaded(torch.device(device)):
        if workers == 1:
            return [function(item) for item in items]
        with worker_pool(workers) as pool:
            return list(pool.map(function, items))
