"""Errors meant for people: one line, naming the file and key, and what would be valid."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any


class BenchsuiteError(Exception):
    """A user-facing error; the CLI prints it on one line and exits with code 2."""


class SuiteError(BenchsuiteError):
    """A suite file is invalid. Carries the file and the key path of the offending value."""

    def __init__(self, message: str, path: str = "", key: str = ""):
        self.file, self.key, self.reason = path, key, message
        where = ": ".join(part for part in (path, key) if part)
        super().__init__(f"{where}: {message}" if where else message)


class PluginError(BenchsuiteError):
    """Plugins conflict (a name given twice) or a name is not provided by any plugin."""


class StoreError(BenchsuiteError):
    """A results database is missing, damaged, newer than this code, or not one benchsuite wrote."""


def value_kind(value: Any) -> str:
    """What a suite's value is, as its YAML reads: "number 3", "string 'x'", "boolean true"."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"number {value}"
    if isinstance(value, str):
        return f"string {value!r}"
    return type(value).__name__


def closest(name: str, valid: Iterable[str], n: int = 3) -> str:
    """'did you mean' text listing the closest valid names, then all of them."""
    valid = sorted(valid)
    near = difflib.get_close_matches(name, valid, n=n, cutoff=0.4)
    listed = ", ".join(valid) if valid else "(none installed)"
    if near:
        return f"did you mean {' or '.join(repr(v) for v in near)}? valid: {listed}"
    return f"valid: {listed}"


class OptimizerStepError(BenchsuiteError):
    """An optimizer raised while the host built or stepped it (docs/optimizer-contract.md).

    One line naming the optimizer, the step (counted from 0 within a round of training; None
    while it was being built) and the original error, which is kept as `__cause__` and `error`.
    `blown_up`: on a stacked training path, which networks of the stack ([K] bool tensor) had a
    NaN or inf loss, weight or gradient when it was raised (engine/divergence.py); None elsewhere.
    """

    def __init__(self, optimizer: str, step: int | None, error: BaseException, hint: str = ""):
        self.optimizer, self.step, self.error, self.hint = optimizer, step, error, hint
        self.blown_up = None
        where = "while being built" if step is None else f"at step {step}"
        reason = " ".join(str(error).split()) or "(no message)"
        text = f"optimizer {optimizer!r} failed {where}: {type(error).__name__}: {reason}"
        super().__init__(f"{text}; {hint}" if hint else text)

    def __reduce__(self):  # picklable, for executors that run cells in other processes
        return (type(self), (self.optimizer, self.step, self.error, self.hint))
