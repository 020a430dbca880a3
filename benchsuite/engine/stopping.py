"""Stopping a thread's engine work, its worker threads included, at the next optimizer step.

The runner stops a cell at its deadline by raising an exception in the thread running it
(execution/cells.py Budget). That alone is not enough: while that thread waits on worker threads
(engine/threads.py), the exception waits too, until the workers finish, which for a round of
100,000 epochs is minutes; and an asynchronous exception that lands inside a finalizer is
printed and dropped by CPython. So a stop is also requested here, for the thread and every
worker thread that serves it, and every optimizer step (engine/stepping.py) checks for one:
the worker raises, its future carries the exception to the waiting thread, and the training
ends within a step wherever it runs.

Cost when nothing is stopped: one truth test of an empty dict per step.
"""

from __future__ import annotations

import threading

_lock = threading.Lock()
_owner: dict[int, int] = {}  # a worker thread -> the thread it serves
_stops: dict[int, type[BaseException]] = {}  # a thread -> what to raise in it and its workers


def serve(owner: int) -> None:
    """Record that the calling thread (a worker) serves thread `owner`."""
    with _lock:
        _owner[threading.get_ident()] = owner


def released(workers) -> None:
    """Forget worker threads that have ended (their identifiers may be reused)."""
    with _lock:
        for ident in workers:
            _owner.pop(ident, None)


def request(thread: int, exception: type[BaseException]) -> None:
    """Raise `exception` at the next stop point of `thread` and of every worker serving it."""
    with _lock:
        _stops[thread] = exception


def withdraw(thread: int) -> None:
    """Withdraw a stop of `thread` (its block ended)."""
    with _lock:
        _stops.pop(thread, None)


def check() -> None:
    """Raise the stop requested for this thread or a thread it serves, if any."""
    if not _stops:
        return
    ident, exception, seen = threading.get_ident(), None, set()
    with _lock:
        while ident is not None and ident not in seen:
            exception = _stops.get(ident)
            if exception is not None:
                break
            seen.add(ident)
            ident = _owner.get(ident)
    if exception is not None:
        raise exception
