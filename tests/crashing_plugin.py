"""A plugin for the fault tests, imported by name by worker processes: optimizers whose worker
dies (os._exit, as a segfault or the OOM killer would end it) or that fail with a user error.
Only in a worker: in the driver (where validation builds each optimizer once) they are SGD."""

from __future__ import annotations

import multiprocessing
import os

import torch

from benchsuite import hookimpl
from benchsuite.errors import BenchsuiteError
from benchsuite.records import OptimizerSpec


def _in_a_worker() -> bool:
    return multiprocessing.parent_process() is not None


def _exits(params, **settings):
    if _in_a_worker():
        os._exit(3)  # the worker process ends here, mid-cell
    return torch.optim.SGD(params, lr=0.01)


def _fails(params, **settings):
    if _in_a_worker():
        raise BenchsuiteError("the optimizer 'fails' refuses to build (a plugin's one-line error)")
    return torch.optim.SGD(params, lr=0.01)


@hookimpl
def benchsuite_optimizers():
    return [
        OptimizerSpec(name="exits", factory=_exits, description="ends its worker process"),
        OptimizerSpec(name="fails", factory=_fails, description="raises a user-facing error in a worker"),
    ]
