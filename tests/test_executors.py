"""The executors: `local`, `processes` (2 workers) and `ray` (a real local cluster on 127.0.0.1)
store the same database row for row, also when a worker is killed in the middle of a cell (its
unit reruns, each cell is written once); a sampler's cells of one stream stay in one unit in N
order; the CLI's --jobs and --address reach the executor's declared options.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import types

import pytest
import yaml
from cli_runner import cli
from fault_helpers import command_of, comparable_rows, descendants, start_run

from benchsuite.plugins import load_registry
from benchsuite.resolved import expand
from benchsuite.runner import Progress, run_suite
from benchsuite.suite import validate_suite

# Gradient cells in stacks, G&C streams over N = 4, 8, a metric; the sgd cell at N = 8 trains for
# a few seconds, so a worker killed when it starts dies in the middle of it.
SUITE = {
    "name": "executors",
    "seed": 5,
    "device": "cpu",
    "models_per_cell": 3,
    "metrics": ["train_loss_frobenius"],
    "tasks": [{"dataset": "digits", "classes": [[0, 1], [3, 8]], "n_train": [4, 8], "training_set_seeds": [200]}],
    "architectures": [{"name": "mlp", "widths": ["1/6"], "depths": [2]}],
    "optimizers": [{"name": "sgd", "epochs": 1500}, {"name": "adam", "epochs": 20}],
    "baselines": [{"name": "gnc", "max_candidates": 2_000_000}],
}
REGISTRY = load_registry(include_entry_points=False)


def suite():
    return validate_suite(SUITE, REGISTRY, "executors.yaml")


def victim(cell) -> bool:
    """The cell during which a worker is killed: sgd at N = 8 (a unit of the two class pairs)."""
    return cell.entry.label == "sgd" and cell.n_train == 8


@pytest.fixture(scope="module")
def local_rows(tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    run_suite(suite(), out, REGISTRY)
    rows = comparable_rows(out / "results.sqlite")
    assert len(rows["cells"]) == len(expand(suite())) == 12 and rows["network_metrics"]
    return rows


class KillWhenStarted(Progress):
    """Kills the workers running the victim cell when its start is reported (the first time);
    counts the starts of every cell (a rerun unit starts its cells again)."""

    def __init__(self, workers):
        self.workers, self.starts, self.killed = workers, {}, []

    def start_cell(self, cell, index, target, unit):
        self.starts[cell.cell_id] = self.starts.get(cell.cell_id, 0) + 1
        if victim(cell) and not self.killed:
            for pid in self.workers():
                os.kill(pid, signal.SIGKILL)
                self.killed.append(pid)


def worker_processes() -> list[int]:
    """The `processes` executor's workers: children of this process (forked or spawned)."""
    return [p.pid for p in multiprocessing.active_children() if p.name == "benchsuite-worker"]


def ray_task_processes() -> list[int]:
    return [pid for pid in descendants(os.getpid()) if command_of(pid).startswith("ray::_run_unit")]


def test_units_keep_the_cells_of_a_sampler_stream_together_in_N_order():
    from benchsuite.execution.units import work_units

    cells = expand(suite())
    units = work_units(list(reversed(cells)))  # whatever order the cells come in
    streams = [u for u in units if u[0].role == "baseline"]
    assert len(streams) == 2 and all([c.n_train for c in u] == [4, 8] for u in streams)
    assert all(len({c.seed for c in u}) == 1 for u in streams)
    assert sorted(len(u) for u in units if u[0].role != "baseline") == [2, 2, 2, 2]
    assert sum(len(u) for u in units) == len(cells)
    assert all(len(u) == 1 for u in work_units(cells, group_cells=False))


def test_only_cells_that_can_share_a_stack_are_grouped():
    """A unit's cells are stored together, once its last is trained; grouping cells that never
    share a stack (a per-network optimizer such as the zoo plugin's Muon, a conv net) would only
    delay them, and lose them all to a run stopped mid-unit."""
    from benchsuite.execution.units import stack_sharing, work_units

    registry = load_registry()  # the installed plugins: benchsuite-zoo's muon among them
    document = {
        **SUITE,
        "tasks": [{**SUITE["tasks"][0], "dataset": "fashion-mnist", "training_set_seeds": [200, 201]}],
        "architectures": [{"name": "mlp", "widths": ["1/6"], "depths": [2]}, {"name": "lenet", "widths": ["1/6"]}],
        "optimizers": [{"name": "sgd", "epochs": 2}, {"name": "muon", "epochs": 2}],
    }
    cells = expand(validate_suite(document, registry, "units.yaml"))
    units = work_units(cells, shares_stacks=stack_sharing(registry))
    sizes = {}
    for unit in units:
        if unit[0].role != "baseline":
            sizes.setdefault((unit[0].entry.label, unit[0].architecture.name), set()).add(len(unit))
    # sgd on the MLP: one unit per N, its 2 pairs x 2 training sets; the rest one cell a unit
    assert sizes == {("sgd", "mlp"): {4}, ("sgd", "lenet"): {1}, ("muon", "mlp"): {1}, ("muon", "lenet"): {1}}
    assert sum(len(u) for u in units) == len(cells)
    assert max(len(u) for u in work_units(cells) if u[0].role != "baseline") == 4  # without it: all grouped


def test_processes_with_a_worker_killed_mid_cell_store_the_rows_of_a_local_run(local_rows, tmp_path):
    progress = KillWhenStarted(worker_processes)
    run_suite(suite(), tmp_path, REGISTRY, progress, executor="processes", executor_options={"jobs": 2})
    first = next(c.cell_id for c in expand(suite()) if victim(c))
    # a unit of gradient cells reports its first cell's start twice (training, then checking):
    # a third start is the rerun of the unit on a fresh worker
    assert progress.killed and progress.starts[first] >= 3, progress.starts
    assert comparable_rows(tmp_path / "results.sqlite") == local_rows
    assert not worker_processes()  # the pool is gone with the run


def test_ray_with_a_worker_killed_mid_cell_stores_the_rows_of_a_local_run(local_rows, tmp_path):
    """A local cluster that the executor starts on 127.0.0.1 (no --address), real Ray workers."""
    pytest.importorskip("ray")
    progress = KillWhenStarted(ray_task_processes)
    run_suite(suite(), tmp_path, REGISTRY, progress, executor="ray", executor_options={"jobs": 2})
    first = next(c.cell_id for c in expand(suite()) if victim(c))
    assert progress.killed and progress.starts[first] >= 3, progress.starts  # Ray retried the unit
    assert comparable_rows(tmp_path / "results.sqlite") == local_rows
    assert not [pid for pid in descendants(os.getpid()) if "ray" in command_of(pid)]  # cluster gone
    assert "RAY_AUTH_TOKEN" not in os.environ  # its token was this run's only


def test_the_cli_joins_a_running_ray_cluster_with_address(local_rows, tmp_path):
    """A cluster the test starts (`ray start --head` on 127.0.0.1, its own token); a real
    `benchsuite run --executor ray --address` process joins it; the cluster outlives the run."""
    pytest.importorskip("ray")
    from benchsuite.builtins.ray_cluster import LocalCluster

    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(SUITE))
    cluster = LocalCluster(2)
    try:
        run = start_run(path, "--out", tmp_path / "out", "--executor", "ray", "--address", cluster.address, **cluster.environment)
        _, errors = run.communicate(timeout=600)
        assert run.returncode == 0, errors
        assert comparable_rows(tmp_path / "out" / "results.sqlite") == local_rows
        assert cluster.process.poll() is None  # joined, not started: still running
    finally:
        cluster.stop()
    assert not [pid for pid in descendants(os.getpid()) if "ray" in command_of(pid)]


def test_executor_options_are_checked_before_anything_is_written(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(SUITE))
    def one_line(*words):
        result = cli("run", str(path), *words)
        assert result.returncode == 2
        return " ".join(result.stderr.split())

    assert "executor 'local' takes no option 'jobs' (its options: none)" in one_line("--out", str(tmp_path / "a"), "--jobs", "2")
    message = one_line("--out", str(tmp_path / "b"), "--executor", "processes", "--address", "x:1")
    assert "executor 'processes' takes no option 'address' (its options: jobs, retries)" in message
    assert "executor 'processes', option 'jobs': expected" in one_line("--out", str(tmp_path / "c"), "--executor", "processes", "--jobs", "0")
    message = one_line("--out", str(tmp_path / "d"), "--executor", "ray", "-X", "gpus_per_unit=2")
    assert "executor 'ray', option 'gpus_per_unit': expected" in message
    assert "--executor-option: expected NAME=VALUE" in one_line("--out", str(tmp_path / "e"), "-X", "retries")
    assert not [p for p in tmp_path.iterdir() if p.name != "suite.yaml"]  # nothing written


def test_a_plugin_that_workers_cannot_import_is_one_line(tmp_path):
    """A plugin given as a module object made in memory cannot be loaded by a worker: refused
    before any worker starts, with the way out."""
    from benchsuite import hookimpl
    from benchsuite.errors import BenchsuiteError
    from benchsuite.records import ExecutorSpec

    module = types.ModuleType("made_in_memory")
    module.benchsuite_executors = hookimpl(lambda: [ExecutorSpec(name="unused", execute=lambda plan: iter(()))])
    registry = load_registry(include_entry_points=False, extra=[("in-memory", module)])
    with pytest.raises(BenchsuiteError, match="not importable by name.*--executor local"):
        run_suite(suite(), tmp_path, registry, executor="processes", executor_options={"jobs": 2})
    assert list(tmp_path.iterdir()) == []  # the database it created held no cell: removed (issue 11)
