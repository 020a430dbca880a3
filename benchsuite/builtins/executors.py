"""The built-in executor: every unit of cells one after another, in this process."""

from __future__ import annotations

from benchsuite import hookimpl
from benchsuite.records import ExecutorSpec


def execute_locally(plan):
    for unit in plan.units:
        yield from plan.run_unit(unit)


@hookimpl
def benchsuite_executors():
    return [
        ExecutorSpec(
            name="local",
            execute=execute_locally,
            description="one unit of cells after another, in this process (the default)",
        )
    ]
