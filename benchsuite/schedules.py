"""Per-step learning-rate schedules declared in a suite, applied by the host to every optimizer.

A gradient-optimizer entry may set `schedule`:

    schedule: cosine                                   # a name alone: its defaults
    schedule: {name: cosine, final: 0.01, warmup_fraction: 0.05}
    schedule: {name: step, every: 20, gamma: 0.5, warmup_steps: 100}
    schedule: {name: constant, warmup_steps: 50}       # warm-up only

At optimizer step t (0, 1, ..., T - 1; T = epochs x steps per epoch of the cell) the host sets every
param group's learning rate to base_lr x factor(t), base_lr being the group's lr when the optimizer
was built (the suite's `lr`). factor(t) = warmup(t) x main(t):
- warmup(t) = (t + 1) / W for t < W, else 1, where W is `warmup_steps`, or
  ceil(`warmup_fraction` x T) (at most one of the two; none: no warm-up);
- constant: main(t) = 1;
- step: main(t) = gamma ** (epoch(t) // every), epoch(t) = t // steps per epoch: the rate drops
  at epoch boundaries, as torch's StepLR stepped once per epoch does (`every` counts epochs, so a
  suite with several N decays at the same points of training);
- cosine: main(t) = final + (1 - final) (1 + cos(pi p)) / 2 with p = (t - W) / (T - W) clipped to
  [0, 1]: from the full rate after warm-up down towards `final` x base_lr, which the step after the
  last would reach (the shape of Hugging Face's cosine schedule with warm-up).
All arithmetic is on Python floats, so the rates are the same on every machine.

The default, constant without warm-up, never touches an optimizer's learning rate, and a suite that
does not set a schedule resolves exactly as before: the resolved entry holds `schedule` only when
it is not the default (suite and cell ids stay what published leaderboards cite).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from benchsuite.errors import closest, value_kind

SCHEDULES = ("constant", "step", "cosine")
# each schedule's own keys with their defaults (None: required)
SCHEDULE_KEYS: dict[str, dict[str, Any]] = {
    "constant": {},
    "step": {"every": None, "gamma": 0.1},
    "cosine": {"final": 0.0},
}
WARMUP_KEYS = ("warmup_steps", "warmup_fraction")


class ScheduleError(ValueError):
    """An invalid schedule: `key` is where below `schedule` (may be ""), `reason` what is valid."""

    def __init__(self, key: str, reason: str):
        self.key, self.reason = key, reason
        super().__init__(f"{key}: {reason}" if key else reason)


@dataclass(frozen=True)
class Schedule:
    """A resolved schedule (see the module docstring); `record` is its canonical JSON form."""

    name: str = "constant"
    every: int | None = None
    gamma: float | None = None
    final: float | None = None
    warmup_steps: int = 0
    warmup_fraction: float = 0.0

    @property
    def record(self) -> dict[str, Any]:
        """What a resolved suite stores: the name, the schedule's own keys, a warm-up if any."""
        record: dict[str, Any] = {"name": self.name}
        for key in SCHEDULE_KEYS[self.name]:
            record[key] = getattr(self, key)
        if self.warmup_steps:
            record["warmup_steps"] = self.warmup_steps
        if self.warmup_fraction:
            record["warmup_fraction"] = self.warmup_fraction
        return record

    @property
    def is_default(self) -> bool:
        return self.name == "constant" and not self.warmup_steps and not self.warmup_fraction

    def warmup(self, total_steps: int) -> int:
        if self.warmup_fraction:
            return math.ceil(self.warmup_fraction * total_steps)
        return self.warmup_steps

    def factor(self, step: int, total_steps: int, steps_per_epoch: int) -> float:
        """The learning-rate multiplier at optimizer step `step` (from 0) of `total_steps`."""
        warmup = self.warmup(total_steps)
        factor = (step + 1) / warmup if step < warmup else 1.0
        if self.name == "step":
            factor *= self.gamma ** ((step // steps_per_epoch) // self.every)
        elif self.name == "cosine":
            progress = min(1.0, max(0, step - warmup) / max(1, total_steps - warmup))
            factor *= self.final + (1.0 - self.final) * (1.0 + math.cos(math.pi * progress)) / 2
        return factor

    def factors(self, total_steps: int, steps_per_epoch: int) -> list[float]:
        """factor(t) for every step t of a training run."""
        return [self.factor(t, total_steps, steps_per_epoch) for t in range(total_steps)]


def from_record(record: Mapping[str, Any] | None) -> Schedule | None:
    """The Schedule of a resolved record (None: the default)."""
    if record is None:
        return None
    return Schedule(**dict(record))


def resolve(value: Any) -> dict[str, Any] | None:
    """A suite's `schedule` value, checked, as the record a resolved suite stores; None for the
    default (constant, no warm-up), which is not stored. Raises ScheduleError."""
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict):
        raise ScheduleError(
            "",
            f"expected a name ({', '.join(SCHEDULES)}) or a mapping with a `name`, got {value_kind(value)}",
        )
    if "name" not in value:
        raise ScheduleError("name", f"missing required key; valid: {', '.join(SCHEDULES)}")
    name = value["name"]
    if not isinstance(name, str) or name not in SCHEDULES:
        shown = repr(name) if isinstance(name, str) else value_kind(name)
        raise ScheduleError("name", f"{shown} is not a schedule; {closest(str(name), SCHEDULES)}")
    own = SCHEDULE_KEYS[name]
    allowed = ("name", *own, *WARMUP_KEYS)
    for key in value:
        if key not in allowed:
            raise ScheduleError(
                str(key), f"unknown key for schedule {name!r}; {closest(str(key), allowed)}"
            )
    fields: dict[str, Any] = {"name": name}
    for key, default in own.items():
        if key not in value and default is None:
            raise ScheduleError(key, f"missing required key of schedule {name!r}")
        fields[key] = _checked(key, value.get(key, default))
    if all(key in value for key in WARMUP_KEYS):
        raise ScheduleError("warmup_fraction", "give warmup_steps or warmup_fraction, not both")
    for key in WARMUP_KEYS:
        if key in value:
            fields[key] = _checked(key, value[key])
    schedule = Schedule(**fields)
    return None if schedule.is_default else schedule.record


def _checked(key: str, value: Any) -> Any:
    if key in ("every", "warmup_steps"):
        minimum = 1 if key == "every" else 0
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ScheduleError(key, f"expected an integer >= {minimum}, got {value_kind(value)}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ScheduleError(key, f"expected a finite number, got {value_kind(value)}")
    value = float(value)
    if key == "gamma" and not 0.0 < value <= 1.0:
        raise ScheduleError(key, f"expected a number in (0, 1], got {value:g}")
    if key == "final" and not 0.0 <= value <= 1.0:
        raise ScheduleError(
            key, f"expected a number in [0, 1] (a fraction of the base lr), got {value:g}"
        )
    if key == "warmup_fraction" and not 0.0 <= value < 1.0:
        raise ScheduleError(
            key, f"expected a number in [0, 1) (a fraction of all steps), got {value:g}"
        )
    return value
