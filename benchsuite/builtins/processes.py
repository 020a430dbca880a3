"""The `processes` executor: units of cells in N local worker processes, a dead worker's unit rerun.

Why a pool of our own and not concurrent.futures: a ProcessPoolExecutor whose worker is killed
breaks as a whole (BrokenProcessPool) and forgets which work the dead worker held. Here each
worker holds one unit at a time and the driver knows which; when a worker dies (killed, out of
memory) the cells of its unit not yet delivered go to a fresh worker, up to `retries` times.
Workers are forked on Linux CPU runs, spawned otherwise (start_method), share the CPUs
(engine.threads.share_cpus), die with the driver, and leave Ctrl-C to it.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from collections import deque
from multiprocessing.connection import wait

from benchsuite.engine.threads import cpu_threads
from benchsuite.errors import BenchsuiteError

REPORT_INTERVAL = 0.25  # seconds between a worker's progress updates (starts are always sent)


class WorkerError(RuntimeError):
    """A cell raised an unexpected exception in a worker; carries the worker's traceback."""


def execute_in_processes(plan):
    units = deque(enumerate(plan.units))
    if not units:
        return
    jobs = min(cpu_threads(plan.options.get("jobs", "auto")), len(units))
    method = start_method(plan.device)  # the run's device as resolved here ("auto" is not)
    share = max(1, cpu_threads("auto") // jobs)
    job = dataclasses.replace(plan.make_job(), cpu_threads=share, torch_threads=1 if method == "fork" else None)
    pool = _Pool(job, jobs, int(plan.options.get("retries", 2)), method)
    try:
        yield from pool.run(units, plan.report)
    finally:
        pool.close()


class _Worker:
    def __init__(self, context, job):
        self.connection, child = context.Pipe()
        self.process = context.Process(
            target=_work, args=(child, job, os.getpid()), name="benchsuite-worker", daemon=True
        )
        self.process.start()
        child.close()
        self.unit: tuple[int, tuple] | None = None  # (index, cells still to deliver)


class _Pool:
    def __init__(self, job, jobs: int, retries: int, method: str):
        self.context = multiprocessing.get_context(method)
        self.job, self.retries = job, retries
        self.workers = [_Worker(self.context, job) for _ in range(jobs)]
        self.attempts: dict[int, int] = {}
        self.failed: list[str] = []

    def run(self, units: deque, report):
        while units or any(w.unit for w in self.workers):
            for worker in self.workers:
                if worker.unit is None and units:
                    worker.unit = units.popleft()
                    worker.connection.send(worker.unit)
            busy = [w for w in self.workers if w.unit is not None]
            ready = wait([w.connection for w in busy] + [w.process.sentinel for w in busy])
            for worker in busy:
                if worker.connection in ready or worker.process.sentinel in ready:
                    yield from self._serve(worker, units, report)
        if self.failed:
            raise BenchsuiteError(
                f"{len(self.failed)} unit(s) of cells never finished: their worker died {self.retries + 1} "
                f"times ({self.failed[0]}); the other cells are saved, run the same command again to retry them"
            )

    def _serve(self, worker: _Worker, units: deque, report):
        """Deliver what the worker sent; if it died, requeue what its unit had left."""
        while worker.unit is not None:
            try:
                if not worker.connection.poll():
                    if worker.process.is_alive():
                        return
                    raise EOFError
                message = worker.connection.recv()
            except (EOFError, OSError):
                self._replace(worker, units)
                return
            kind = message[0]
            if kind == "event":
                report(message[1])
            elif kind == "cell":
                index, cells = worker.unit
                outcome = message[1]
                worker.unit = (index, tuple(c for c in cells if c.cell_id != outcome.cell.cell_id))
                yield outcome
            elif kind == "done":
                worker.unit = None
            elif kind == "error":
                _, benchsuite_error, text = message
                raise BenchsuiteError(text) if benchsuite_error else WorkerError(text)

    def _replace(self, worker: _Worker, units: deque) -> None:
        from benchsuite.execution.units import unit_label

        index, cells = worker.unit
        worker.process.join(1)
        code = worker.process.exitcode
        why = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        self.attempts[index] = self.attempts.get(index, 0) + 1
        if cells and self.attempts[index] <= self.retries:
            units.appendleft((index, cells))  # rerun first: its cells are the oldest in flight
        elif cells:
            self.failed.append(f"{unit_label(cells)}: {why}")
        worker.connection.close()
        fresh = _Worker(self.context, self.job)
        self.workers[self.workers.index(worker)] = fresh

    def close(self) -> None:
        for worker in self.workers:
            try:
                worker.connection.send(None)
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + 2
        for worker in self.workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():  # busy with a unit nobody will store: stop it
                worker.process.kill()
                worker.process.join()
            worker.connection.close()


def start_method(device: str) -> str:
    """fork on Linux for CPU runs: a worker starts with the driver's imports, plugins and data
    already loaded (measured on 2 busy cores: a tiny suite in 13 s against 35 s spawned); a forked
    worker runs torch on one thread, as DataLoader workers do (OpenMP's pool does not survive
    fork), G&C's own threads on its share of the CPUs. spawn elsewhere, and for CUDA, which a
    forked process cannot use once the driver has touched it."""
    if sys.platform == "linux" and device == "cpu" and "fork" in multiprocessing.get_all_start_methods():
        return "fork"
    return "spawn"


def _work(connection, job, parent: int) -> None:
    """A worker: run the units it is sent, send back events, cells and the end of each unit."""
    from benchsuite.execution.cells import Forwarder

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's; it stops us
    _die_with(parent)
    lock = threading.Lock()  # two threads send: this one (cells) and the progress forwarder

    def send(message: tuple) -> None:
        with lock:
            connection.send(message)

    report = Forwarder(lambda event: send(("event", event)), REPORT_INTERVAL)
    while True:
        try:
            message = connection.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        index, unit = message
        try:
            for outcome in job(unit, report):
                send(("cell", outcome))
            send(("done", index))
        except BenchsuiteError as error:
            send(("error", True, str(error)))
        except Exception:  # noqa: BLE001 - sent to the driver, which raises it with this traceback
            send(("error", False, traceback.format_exc()))


def _die_with(parent: int) -> None:
    """End this worker when the driver ends, even by kill -9 (no one would store its cells)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: the kernel kills us with the parent
    except (OSError, AttributeError):
        pass

    def watch() -> None:  # elsewhere (and if the parent died before prctl): poll
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="benchsuite-parent-watch").start()
