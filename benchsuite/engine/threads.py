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


SHARE: int | None = None  # set by share_cpus in a worker that shares the CPUs with others


def share_cpus(threads: int, torch_threads: int | None = None) -> None:
    """This process is one of several workers on the same CPUs (the `processes` and `ray`
    executors): G&C's worker threads for "auto" and torch use `threads` (1 when there are as many
    workers as CPUs), so workers do not oversubscribe the cores. `torch_threads` overrides
    torch's count: a forked worker must keep torch on one thread (OpenMP's thread pool does not
    survive fork: a second thread deadlocks, seen in the first kernel)."""
    global SHARE
    SHARE = max(1, int(threads))
    torch.set_num_threads(SHARE if torch_threads is None else max(1, int(torch_threads)))


def cpu_threads(option) -> int:
    """Worker threads: `option`, or for "auto" the CPUs this process may use (its share of them
    in a worker, share_cpus)."""
    if option == "auto" and SHARE is not None:
        return SHARE
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
