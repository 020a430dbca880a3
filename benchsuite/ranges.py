"""Range checks for hyperparameters, for plugins' `check` functions (OptimizerSpec, SamplerSpec).

Each raises ValueError("name: what is valid, got value"); the suite reports it under the entry's
key, so a value that would crash or silently misbehave at run time fails before anything runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def interval(values: Mapping[str, Any], name: str, low: float, high: float = math.inf, *, closed_high: bool = False) -> None:
    """`values[name]` (when given) is a finite number in [low, high) (or [low, high])."""
    if name not in values:
        return
    value = values[name]
    shown = f"[{low:g}, {high:g}{']' if closed_high else ')'}" if math.isfinite(high) else f">= {low:g}"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number {shown}, got {value!r}")
    if value < low or value > high or (value == high and not closed_high):
        raise ValueError(f"{name}: expected a number {shown}, got {value!r}")


def positive_fraction(values: Mapping[str, Any], name: str) -> None:
    """`values[name]` in (0, 1]."""
    value = values.get(name)
    if name in values and (isinstance(value, bool) or not isinstance(value, (int, float))
                           or not math.isfinite(value) or not 0 < value <= 1):
        raise ValueError(f"{name}: expected a number in (0, 1], got {value!r}")


def integer_or(values: Mapping[str, Any], name: str, word: str, minimum: int = 1) -> None:
    """`values[name]` is `word` (such as "auto") or an integer >= minimum."""
    value = values.get(name)
    if name not in values or value == word:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: expected {word!r} or an integer >= {minimum}, got {value!r}")


def boolean_or(values: Mapping[str, Any], name: str, word: str) -> None:
    """`values[name]` is true, false or `word`."""
    value = values.get(name)
    if name in values and not isinstance(value, bool) and value != word:
        raise ValueError(f"{name}: expected true, false or {word!r}, got {value!r}")
