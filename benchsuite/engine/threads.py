"""Threads for the engines on CPU: one torch thread per kernel, parallelism across networks.

OpenMP barriers inside thousands of small ops cost milliseconds each on a busy machine, so the
engines run torch single-threaded and split work over their own worker threads instead.
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


def cpu_threads(option) -> int:
    """Worker threads: `option`, or for "auto" the CPUs this process may use."""
    if option == "auto":
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not on Linux
            return max(1, os.cpu_count() or 1)
    return max(1, int(option))


