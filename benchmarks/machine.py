"""What a benchmark figure needs beside it: the machine, the threads, the load; and a competing load.

Why: the same code measured 2x apart on one shared 2-core machine depending on what else ran,
and docs/performance.md once described a processor these machines no longer have. Every
benchmark records `describe()` in extra_info, and measures under `competing_load()` as well as
without it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "fma")
BUSY_LOOP = "while True:\n    pass\n"


def cpus() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cpu_model() -> dict:
    """Model name and the vector-unit flags of /proc/cpuinfo (Linux), and torch's view of them."""
    info = {"model": "unknown", "flags": []}
    path = Path("/proc/cpuinfo")
    if path.exists():
        for line in path.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and info["model"] == "unknown":
                info["model"] = value.strip()
            if key.strip() == "flags" and not info["flags"]:
                present = set(value.split())
                info["flags"] = [flag for flag in FLAGS if flag in present]
    info["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    return info


def describe() -> dict:
    """Machine, CPUs of this process, torch threads, and the 1-minute load average now."""
    return {
        **cpu_model(),
        "cpus": cpus(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "torch": torch.__version__,
    }


@contextlib.contextmanager
def competing_load(processes: int | None = None):
    """One busy-loop process per CPU of this process (or `processes`), for the block's duration:
    another user's job taking every core, as on the shared machines."""
    started = [
        subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(processes or cpus())
    ]
    time.sleep(0.5)  # let them reach the scheduler
    try:
        yield len(started)
    finally:
        for process in started:
            process.kill()
        for process in started:
            process.wait()


@contextlib.contextmanager
def torch_threads(count: int):
    """torch's intra-op threads for the block (a reference side of a same-thread-count ratio)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def thread_counts() -> list[int]:
    """The thread counts a ratio is measured at: one, and every CPU of this process."""
    return sorted({1, cpus()})
