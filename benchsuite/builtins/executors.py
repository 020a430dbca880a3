"""The built-in executors: `local` (one unit after another, in this process), `processes` (N local
worker processes) and `ray` (a Ray cluster: local, or joined with --address). Their code lives in
processes.py and ray_cluster.py; Ray is imported only when the `ray` executor runs."""

from __future__ import annotations

from benchsuite import hookimpl
from benchsuite.records import ExecutorSpec, Hyperparameter


def execute_locally(plan):
    for unit in plan.units:
        yield from plan.run_unit(unit)


def execute_in_processes(plan):
    from benchsuite.builtins.processes import execute_in_processes as execute

    yield from execute(plan)


def execute_on_ray(plan):
    from benchsuite.builtins.ray_cluster import execute_on_ray as execute

    yield from execute(plan)


def _jobs(help: str) -> Hyperparameter:
    return Hyperparameter(int, "auto", low=1, words=("auto",), help=help)


def _retries(default: int) -> Hyperparameter:
    return Hyperparameter(int, default, low=0, high=100, help="reruns of a unit whose worker died")


PROCESSES_OPTIONS = {
    "jobs": _jobs("worker processes; auto: the CPUs this process may use"),
    "retries": _retries(2),
}
RAY_OPTIONS = {
    "address": Hyperparameter(str, "", help="a running cluster to join (auto, HOST:PORT, ray://HOST:PORT); empty: start a local one on 127.0.0.1"),
    "jobs": _jobs("CPUs of the local cluster (auto: the CPUs this process may use); with an address, units in flight at most (auto: as many as the cluster takes)"),
    "cpus_per_unit": Hyperparameter(float, 1.0, low=0.0, open_low=True, help="CPUs each unit asks of Ray (torch threads in its worker)"),
    "gpus_per_unit": Hyperparameter(float, "auto", low=0.0, high=1.0, words=("auto",), help="GPU fraction each unit asks for; auto: sized from the unit's planned memory on a CUDA run, none on CPU"),
    "retries": _retries(3),
}


@hookimpl
def benchsuite_executors():
    return [
        ExecutorSpec(
            name="local",
            execute=execute_locally,
            description="one unit of cells after another, in this process (the default)",
        ),
        ExecutorSpec(
            name="processes",
            execute=execute_in_processes,
            options=PROCESSES_OPTIONS,
            description="units of cells in N local worker processes (--jobs N); a unit whose worker dies is rerun",
        ),
        ExecutorSpec(
            name="ray",
            execute=execute_on_ray,
            options=RAY_OPTIONS,
            description="each unit of cells a Ray task (pip install 'benchsuite[ray]'); --address joins a cluster, else a local one starts",
        ),
    ]
