"""A cell's deadline stops its training wherever the training runs (engine/stopping.py,
execution/cells.py Budget): on the thread that runs the cell, and on the worker threads that
thread waits for, where an asynchronous exception in the waiting thread cannot reach."""

from __future__ import annotations

import sys
import threading
import time

import pytest
import torch
from torch import nn

from benchsuite.engine import stopping
from benchsuite.engine.batches import round_orders
from benchsuite.engine.threads import spread, worker_pool
from benchsuite.engine.training import initial_parameters, train_networks
from benchsuite.execution.cells import Budget, CellTimedOut
from benchsuite.records import Hyperparameter, OptimizerSpec, PriorSpec, kaiming_uniform_bound


class Stop(BaseException):
    pass


def checked(_item=None) -> str:
    stopping.check()
    return "ran"


def test_a_stop_reaches_the_workers_serving_the_thread_and_no_other():
    me = threading.get_ident()
    with worker_pool(2) as pool:
        assert [f.result() for f in [pool.submit(checked) for _ in range(4)]] == ["ran"] * 4
        stopping.request(me, Stop)
        try:
            with pytest.raises(Stop):
                checked()
            futures = [pool.submit(checked) for _ in range(4)]
            assert all(isinstance(f.exception(), Stop) for f in futures)
            outside = []  # a thread that does not serve this one runs on
            other = threading.Thread(target=lambda: outside.append(checked()))
            other.start()
            other.join()
            assert outside == ["ran"]
        finally:
            stopping.withdraw(me)
        assert [f.result() for f in [pool.submit(checked) for _ in range(4)]] == ["ran"] * 4


def test_workers_are_forgotten_when_their_pool_ends():
    with worker_pool(2) as pool:
        idents = {f.result() for f in [pool.submit(threading.get_ident) for _ in range(8)]}
        assert idents <= set(stopping._owner)
    assert not idents & set(stopping._owner)


def test_a_stop_raised_in_a_worker_reaches_the_caller_of_spread():
    stopping.request(threading.get_ident(), Stop)
    try:
        with pytest.raises(Stop):
            spread(checked, range(4), 2)
    finally:
        stopping.withdraw(threading.get_ident())
    assert spread(checked, range(4), 2) == ["ran"] * 4


def test_the_deadline_stops_networks_training_on_workers_while_the_cell_waits():
    """The runner's thread waits for the per-network workers (tuning trials of 100,000 epochs
    timed out late, and once not at all): the stop reaches the workers, which start no step
    after it. Networks 0 and 1 train on this thread, then a wave on two workers
    (engine/training.py _spread), whose first steps wait for the deadline to pass."""
    me, steps = threading.get_ident(), []

    class Waiting(torch.optim.SGD):
        def step(self, closure=None):
            worker = threading.get_ident() != me
            steps.append((worker, bool(stopping._stops)))
            if worker and len([s for s in steps if s[0]]) <= 2:
                waited = time.perf_counter()
                while not stopping._stops and time.perf_counter() - waited < 30:
                    time.sleep(0.01)
            return super().step(closure)

    spec = OptimizerSpec(name="waiting", factory=Waiting, hyperparameters={"lr": Hyperparameter(float, 0.01)})
    module = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2))
    prior = PriorSpec(name="kaiming-uniform", family="uniform", scale=kaiming_uniform_bound)
    parameters, buffers = initial_parameters(module, prior, 1, range(6), "cpu")
    n, epochs = 8, 3
    orders = round_orders(1, range(6), n, epochs, "independent")
    x, y = torch.randn(n, 1, 4, 4), torch.arange(n) % 2
    torch.optim.SGD([torch.zeros(1, requires_grad=True)])  # its first one imports for seconds
    with pytest.raises(CellTimedOut):
        with Budget(1.0).enforced():
            train_networks(
                module, x, y, spec, {"lr": 0.01}, parameters, buffers, orders, 2,
                path="per_network", workers=2,
            )  # fmt: skip
    on_workers = [stopped for worker, stopped in steps if worker]
    assert on_workers[:2] == [False, False]  # the wave started before the deadline
    assert not any(on_workers), f"{sum(on_workers)} steps started on workers after the deadline"
    assert not stopping._stops  # the request ended with the block
    checked()


def test_the_deadline_waits_for_an_import_to_finish(tmp_path, monkeypatch):
    """An asynchronous exception inside an import leaves a half-made module in sys.modules
    (seen: scipy.ndimage, whose next import raised NameError), so the budget looks at the
    thread's stack and raises only once the import is over."""
    from benchsuite.execution.cells import _importing

    (tmp_path / "slow_module_for_budget.py").write_text(
        "import time\nstarted = time.perf_counter()\n"
        "while time.perf_counter() - started < 0.6:\n    pass\nDONE = True\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    seen = []
    with pytest.raises(CellTimedOut):
        with Budget(0.1).enforced():
            me = threading.get_ident()
            watcher = threading.Thread(target=lambda: (time.sleep(0.3), seen.append(_importing(me))))
            watcher.start()
            import slow_module_for_budget

            seen.append(_importing(me))
            while True:  # the deadline has passed: CellTimedOut lands here
                pass
    assert seen[0] is True and seen[-1] is False
    watcher.join()
    assert seen == [True, False]  # importing at the deadline; the exception came after
    assert sys.modules["slow_module_for_budget"].DONE
