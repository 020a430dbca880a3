"""Faults, nothing lost and nothing counted twice (docs/reliability.md lists each with its test):
the driver killed with kill -9 at several points, two runs on one folder, a leaderboard taken
while a run writes, an optimizer that diverges (or fails on its diverged networks, one at a time
or in a stack), a cell over its time budget, G&C running out of memory, a cell delivered twice.
Real processes, real kills, a real allocation failure.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import yaml
from cli_runner import cli
from fault_helpers import alive, cell_count, comparable_rows, descendants, environment, start_run

from benchsuite.plugins import load_registry
from benchsuite.runner import run_suite
from benchsuite.store import Store, lock_path
from benchsuite.suite import validate_suite

REGISTRY = load_registry(include_entry_points=False)
# 16 cells in 6 units: two stacks of 4 sgd cells (N = 4, 6), four G&C streams of 2 cells
FAULTS = {
    "name": "faults",
    "seed": 11,
    "device": "cpu",
    "models_per_cell": 6,
    "tasks": [{"dataset": "digits", "classes": [[0, 1], [3, 8]], "n_train": [4, 6], "training_set_seeds": [200, 201]}],
    "architectures": [{"name": "mlp", "widths": ["2/6"], "depths": [2]}],
    "optimizers": [{"name": "sgd", "epochs": 150}],
    "baselines": [{"name": "gnc", "max_candidates": 5_000_000}],
}


def write_suite(folder, document=FAULTS):
    path = folder / "suite.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    run_suite(validate_suite(FAULTS, REGISTRY, "faults.yaml"), out, REGISTRY)
    return comparable_rows(out / "results.sqlite")


def kill_when(process: subprocess.Popen, database, cells: int, timeout: float = 300) -> list[int]:
    """SIGKILL the driver (only it) once the database holds `cells` cells; returns the pids that
    were below it then (its workers)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if database.exists() and cell_count(database) >= cells:
            break
        time.sleep(0.02)
    below = descendants(process.pid)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return below


def test_the_driver_killed_at_several_points_resumes_to_the_database_of_an_uninterrupted_run(uninterrupted, tmp_path):
    suite, out = write_suite(tmp_path), tmp_path / "out"
    database = out / "results.sqlite"
    seen = []
    # in-process, processes with two workers (they must die with their driver), in-process again
    for executor, cells in (("processes", 0), ("local", 4), ("processes", 10)):
        jobs = ("--jobs", "2") if executor == "processes" else ()
        process = start_run(suite, "--out", out, "--executor", executor, *jobs)
        workers = kill_when(process, database, cells)
        seen.append(cell_count(database) if database.exists() else 0)
        deadline = time.monotonic() + 20
        while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in workers if alive(pid)], "workers outlived their driver"
        assert lock_path(database).exists()  # left behind by the killed run: stale, taken over next
    assert seen == sorted(seen) and seen[-1] < 16, seen  # each kill landed before the end
    result = cli("run", str(suite), "--out", str(out), "--executor", "processes", "--jobs", "2")
    assert result.returncode == 0, result.stderr
    assert comparable_rows(database) == uninterrupted
    assert not lock_path(database).exists()


def test_a_second_run_into_a_folder_being_written_refuses_and_the_first_is_unharmed(uninterrupted, tmp_path):
    suite, out = write_suite(tmp_path), tmp_path / "out"
    first = start_run(suite, "--out", out)
    deadline = time.monotonic() + 120
    while not lock_path(out / "results.sqlite").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    second = cli("run", str(suite), "--out", str(out))
    assert second.returncode == 2, second.stderr
    message = " ".join(second.stderr.split())
    assert f"another benchsuite run is writing here (pid {first.pid} on" in message and "wait for it to finish" in message
    assert first.wait(300) == 0, first.stderr.read()
    assert comparable_rows(out / "results.sqlite") == uninterrupted


def test_a_lock_left_by_a_dead_run_is_stale_and_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    out = tmp_path / "out"
    out.mkdir()
    lock_path(out / "results.sqlite").write_text(json.dumps({"pid": int(dead.stdout), "host": "here", "started": "then"}))
    small = dict(FAULTS, tasks=[dict(FAULTS["tasks"][0], classes=[[0, 1]], n_train=[4], training_set_seeds=[200])])
    result = cli("run", str(write_suite(tmp_path, small)), "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    assert cell_count(out / "results.sqlite") == 2 and not lock_path(out / "results.sqlite").exists()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")
def test_a_forked_worker_does_not_keep_its_drivers_lock(tmp_path):
    """flock belongs to the open file, which fork shares: a `processes` worker that outlives its
    killed driver by a moment must not keep the folder locked against the rerun (it did, under
    load). The child closes the lock at fork; the parent's lock holds until it lets go."""
    from benchsuite.store import FolderLock
    from benchsuite.store.database import StoreError

    database = tmp_path / "results.sqlite"
    driver = FolderLock(database).__enter__()
    ready, started = os.pipe()
    child = os.fork()
    if child == 0:  # the worker (fork's handlers have run): lives on after its driver is gone
        os.write(started, b"1")
        time.sleep(5)
        os._exit(0)
    os.read(ready, 1)
    try:
        with pytest.raises(StoreError, match="another benchsuite run is writing here"):
            FolderLock(database).__enter__()  # the driver's lock holds while the driver lives
        os.close(driver.fd)  # the driver dies as kill -9 ends it: the lock file stays behind
        assert lock_path(database).exists() and alive(child)
        with FolderLock(database):  # the child lives, and the folder is free
            assert alive(child)
    finally:
        os.kill(child, signal.SIGKILL)
        os.close(ready)
        os.close(started)
        os.waitpid(child, 0)


def test_leaderboards_taken_while_a_run_writes_read_consistent_snapshots(uninterrupted, tmp_path):
    from benchsuite.leaderboard import leaderboard_from_store

    suite, out = write_suite(tmp_path), tmp_path / "out"
    database = out / "results.sqlite"
    run = start_run(suite, "--out", out)
    taken = []
    while run.poll() is None:
        if cell_count(database) == 0:
            time.sleep(0.05)
            continue
        with Store.open_existing(out) as store:
            before = store.cell_count()
            time.sleep(0.3)  # the run goes on writing meanwhile
            store.check_network_counts()  # every cell with all its networks, none half written
            rows = leaderboard_from_store(store)
            assert store.cell_count() == before == len(store.cells())  # one snapshot throughout
            assert sum(r["training_sets"] for r in rows) == before
        taken.append(before)
    assert run.returncode == 0, run.stderr.read()
    assert any(0 < n < 16 for n in taken), taken  # some were taken mid-run
    assert comparable_rows(database) == uninterrupted
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("results")) == ["results.sqlite"]
    before = database.read_bytes()
    assert cli("leaderboard", str(out)).returncode == 0
    assert database.read_bytes() == before  # read-only: not a byte changed, no -wal left beside
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("results")) == ["results.sqlite"]
    with Store.open_existing(out) as store, pytest.raises(sqlite3.OperationalError, match="readonly|read-only"):
        store.connection.execute("DELETE FROM networks")


def test_a_cell_delivered_twice_is_written_once(tmp_path):
    small = dict(FAULTS, tasks=[dict(FAULTS["tasks"][0], classes=[[0, 1]], n_train=[4], training_set_seeds=[200])])
    suite = validate_suite(small, REGISTRY, "small.yaml")

    def twice(plan):
        for unit in plan.units:
            outcomes = list(plan.run_unit(unit))
            yield from outcomes
            yield from outcomes  # a retried unit delivers its cells again

    from types import ModuleType

    from benchsuite import hookimpl
    from benchsuite.records import ExecutorSpec

    module = ModuleType("twice")
    module.benchsuite_executors = hookimpl(lambda: [ExecutorSpec(name="twice", execute=twice)])
    registry = load_registry(include_entry_points=False, extra=[("twice", module)])
    run_suite(suite, tmp_path, registry, executor="twice")
    with Store.open_existing(tmp_path) as store:
        assert store.cell_count() == 2 and len(store.network_rows()) == 12
        store.check_network_counts()


def test_an_optimizer_that_diverges_is_recorded_so_and_the_suite_goes_on(tmp_path):
    """SGD with lr 1e30: its loss becomes inf and its weights NaN. Those cells are recorded as
    diverged, with no network; the leaderboard says how many; every other cell runs as usual."""
    document = dict(FAULTS, optimizers=[{"name": "sgd", "epochs": 20}, {"name": "sgd", "label": "sgd-lr-1e30", "lr": 1e30, "epochs": 20}])
    suite = validate_suite(document, REGISTRY, "diverges.yaml")
    rows = run_suite(suite, tmp_path, REGISTRY)
    with Store.open_existing(tmp_path) as store:
        cells = {(c["optimizer"], c["n_train"], c["classes"], c["training_set_seed"]): c for c in store.cells()}
        networks = store.network_rows()
    bad = [c for key, c in cells.items() if key[0] == "sgd-lr-1e30"]
    assert len(bad) == 8 and sum(c["status"] == "diverged" for c in bad) >= 6
    for cell in bad:
        assert cell["models_found"] == 0 and cell["diverged"] > 0
        if cell["status"] == "diverged":
            assert "NaN or inf" in cell["status_detail"]
    assert not [n for n in networks if n["optimizer"] == "sgd-lr-1e30"]  # never an interpolator
    assert all(c["status"] == "ok" and c["models_found"] == 6 for k, c in cells.items() if k[0] != "sgd-lr-1e30")
    board = {(r["optimizer"], r["n_train"], tuple(r["classes"])): r for r in rows}
    assert sum(r["diverged"] for r in rows) == sum(c["status"] == "diverged" for c in bad)
    assert all(board[("sgd-lr-1e30", n, p)]["test_acc_mean"] is None for n in (4, 6) for p in ((0, 1), (3, 8)))
    markdown = (tmp_path / "leaderboard.md")
    from benchsuite.reporting.files import write_leaderboard

    write_leaderboard(rows, tmp_path)
    text = markdown.read_text()
    assert "diverged)" in text and "Diverged:" in text and "never counted as an interpolator" in text


class _SpectralSGD:
    """An optimizer that takes an SVD of every gradient matrix (as Shampoo and SOAP do): on a NaN
    gradient torch.linalg raises, which ends the optimizer's step with an error."""

    def __init__(self, params, lr):
        self.param_groups = [{"params": list(params), "lr": lr}]

    def zero_grad(self, set_to_none=True):
        for p in self.param_groups[0]["params"]:
            p.grad = None

    def step(self, closure=None):
        import torch

        with torch.no_grad():
            for p in self.param_groups[0]["params"]:
                if p.grad is None:
                    continue
                if p.grad.dim() == 2:
                    torch.linalg.svd(p.grad)  # LinAlgError on NaN or inf entries
                p.add_(p.grad, alpha=-self.param_groups[0]["lr"])


def test_an_optimizer_that_fails_on_its_diverged_network_records_divergence_and_the_suite_goes_on(tmp_path):
    """At lr 1e30 the loss blows up and the optimizer's SVD raises on the NaN gradient (Shampoo
    in the zoo did so and stopped a whole suite): that network diverged, the cell is recorded as
    such, and the suite goes on. At a sane lr the same optimizer trains as usual; an error on a
    finite network is still the plugin's error, in one line (tests/test_optimizer_contract.py)."""
    from types import ModuleType

    from benchsuite import hookimpl
    from benchsuite.records import Hyperparameter, OptimizerSpec

    spec = OptimizerSpec(
        name="spectral-sgd", factory=lambda params, lr: _SpectralSGD(params, lr),
        hyperparameters={"lr": Hyperparameter(float, 0.01, low=0.0)},
    )  # one network at a time (neither elementwise nor stacked), as Shampoo
    module = ModuleType("spectral")
    module.benchsuite_optimizers = hookimpl(lambda: [spec])
    registry = load_registry(include_entry_points=False, extra=[("spectral", module)])
    optimizers = [{"name": "spectral-sgd", "epochs": 20}, {"name": "spectral-sgd", "label": "blows-up", "lr": 1e30, "epochs": 20}]
    rows = run_suite(validate_suite(dict(FAULTS, optimizers=optimizers), registry, "spectral.yaml"), tmp_path, registry)
    with Store.open_existing(tmp_path) as store:
        cells = store.cells()
    bad = [c for c in cells if c["optimizer"] == "blows-up"]
    assert len(bad) == 8 and all(c["models_found"] == 0 and c["diverged"] > 0 for c in bad)
    assert sum(c["status"] == "diverged" for c in bad) >= 6
    assert all(c["status"] == "ok" and c["models_found"] == 6 for c in cells if c["optimizer"] != "blows-up")
    assert sum(r["diverged"] for r in rows) == sum(c["status"] == "diverged" for c in bad)


def test_an_optimizer_whose_linear_algebra_fails_on_a_finite_network_loses_that_network_not_the_suite(tmp_path):
    """Shampoo's SVD of an ill-conditioned statistic may not converge on a perfectly finite
    network (it stopped the zoo slice at cell 172 of 204): a torch.linalg.LinAlgError from a step
    loses that network to numerics, counted with the diverged; the suite goes on."""
    from types import ModuleType

    import torch

    from benchsuite import hookimpl
    from benchsuite.records import Hyperparameter, OptimizerSpec

    class Fragile(torch.optim.SGD):
        def step(self, closure=None):
            self.steps = getattr(self, "steps", 0) + 1
            if self.steps == 3:
                raise torch.linalg.LinAlgError("linalg.svd: The algorithm failed to converge")
            return super().step(closure)

    spec = OptimizerSpec(
        name="fragile", factory=lambda params, lr: Fragile(params, lr=lr),
        hyperparameters={"lr": Hyperparameter(float, 0.01, low=0.0)},
    )  # one network at a time, as Shampoo  # fmt: skip
    module = ModuleType("fragile")
    module.benchsuite_optimizers = hookimpl(lambda: [spec])
    registry = load_registry(include_entry_points=False, extra=[("fragile", module)])
    document = dict(FAULTS, optimizers=[{"name": "sgd", "epochs": 20}, {"name": "fragile", "epochs": 20}])
    run_suite(validate_suite(document, registry, "fragile.yaml"), tmp_path, registry)
    with Store.open_existing(tmp_path) as store:
        cells = store.cells()
    fragile = [c for c in cells if c["optimizer"] == "fragile"]
    assert len(fragile) == 8 and all(c["status"] == "diverged" and c["models_found"] == 0 for c in fragile)
    assert all("linear algebra failed" in c["status_detail"] for c in fragile)
    assert all(c["status"] == "ok" and c["models_found"] == 6 for c in cells if c["optimizer"] != "fragile")


class _DoomedSGD:
    """A stack-aware SGD (OptimizerSpec.stacked: it keeps the networks of a stack apart) for the
    numerics rule on a stack. The networks whose optimizer seed is doomed (seed % 4 == 0) fail;
    `mode` (set by the test) says how:
    - "raises": they step 1e30 times too far and blow up, and the optimizer raises on the NaN or
      inf gradient it then sees anywhere in its stack (as Shampoo's SVD would);
    - "quiet": the same steps, and the optimizer steps on (NaN stays in a network);
    - "linalg": at step 3 its linear algebra fails on a stack holding one (finite numbers);
    - "linalg-quiet": at step 3 they are set to NaN instead;
    - "clean": no network is doomed; "bug": it raises at step 2 whatever the numbers;
    - "late-bug": as "quiet", and it raises at step 5 whatever the numbers.
    `raised` counts the numerics errors it raised, so that a test knows the rule was used."""

    mode = "raises"
    raised = 0

    def __init__(self, params, networks, lr):
        import torch

        self.param_groups = [{"params": list(params), "lr": lr}]
        self.doomed = torch.tensor([s % 4 == 0 and self.mode != "clean" for s in networks.seeds])
        self.steps = 0

    def step(self, closure=None):
        import torch

        mode, params, lr = self.mode, self.param_groups[0]["params"], self.param_groups[0]["lr"]
        with torch.no_grad():
            if mode == "raises" and not all(bool(torch.isfinite(p.grad).all()) for p in params):
                _DoomedSGD.raised += 1
                raise FloatingPointError("the gradient is not finite")
            if mode == "linalg" and self.steps == 3 and bool(self.doomed.any()):
                _DoomedSGD.raised += 1
                raise torch.linalg.LinAlgError("linalg.svd: The algorithm failed to converge")
            if (mode, self.steps) in (("bug", 2), ("late-bug", 5)):
                raise RuntimeError("a bug in the plugin")
            blowing = ("raises", "quiet", "late-bug")
            far = self.doomed if mode in blowing else torch.zeros_like(self.doomed)
            rates = torch.where(far, lr * 1e30, lr)
            for p in params:
                p.sub_(p.grad * rates.to(p.dtype).view(-1, *[1] * (p.dim() - 1)))
                if mode == "linalg-quiet" and self.steps == 3:
                    p[self.doomed] = float("nan")
        self.steps += 1


def _doomed_registry():
    from types import ModuleType

    from benchsuite import hookimpl
    from benchsuite.records import Hyperparameter, OptimizerSpec

    spec = OptimizerSpec(
        name="doomed-sgd", factory=_DoomedSGD, stacked=True,
        hyperparameters={"lr": Hyperparameter(float, 0.05, low=0.0)},
    )  # fmt: skip
    module = ModuleType("doomed")
    module.benchsuite_optimizers = hookimpl(lambda: [spec])
    return spec, load_registry(include_entry_points=False, extra=[("doomed", module)])


def _stack_case(path):
    """(module, input shape) trained on `path`: an MLP whose products bmm and mm compute alike,
    a small LeNet-like network, a ResNet4 (BatchNorm buffers)."""
    from torch import nn

    from benchsuite.architectures.resnet4 import build_resnet4

    if path == "conv":
        conv = [nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(36, 2)]
        return nn.Sequential(*conv), (1, 8, 8)
    if path == "resnet":
        return build_resnet4((1, 28, 28), "1/6"), (1, 28, 28)
    mlp = [nn.Flatten(), nn.Linear(64, 100, bias=False), nn.ReLU(), nn.Linear(100, 2)]
    return nn.Sequential(*mlp), (1, 8, 8)


@pytest.mark.parametrize("failing, quiet", [("raises", "quiet"), ("linalg", "linalg-quiet")])
@pytest.mark.parametrize("path", ["mlp", "vmap", "conv", "resnet"])
def test_a_stack_whose_optimizer_fails_on_some_networks_loses_those_and_the_rest_train_as_alone(
    failing, quiet, path, monkeypatch
):
    """A stack-aware optimizer that raises on a NaN in its stack, or whose linear algebra fails
    on some of its networks, loses those networks to numerics (NaN parameters); every other
    network is bit for bit what it is in a run where nothing raised, and where none diverged."""
    import torch

    from benchsuite.engine.batches import optimizer_seed, round_orders
    from benchsuite.engine.training import choose_path, initial_parameters, train_networks
    from benchsuite.records import PriorSpec, kaiming_uniform_bound

    spec, _ = _doomed_registry()
    module, shape = _stack_case(path)
    assert path == "vmap" or choose_path(module, spec) == path
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, *shape, generator=generator), torch.arange(16) % 2
    prior = PriorSpec(name="kaiming-uniform", family="uniform", scale=kaiming_uniform_bound)
    attempts = range(12)
    parameters, buffers = initial_parameters(module, prior, 7, attempts, "cpu")
    orders = round_orders(7, attempts, 16, 2, "independent")
    seeds = [optimizer_seed(7, a) for a in attempts]
    doomed = torch.tensor([s % 4 == 0 for s in seeds])
    assert 0 < int(doomed.sum()) < len(seeds) - 1  # some fail, more than one survives

    def train(mode):
        monkeypatch.setattr(_DoomedSGD, "mode", mode)
        trained = train_networks(
            module, x, y, spec, {"lr": 0.05}, parameters, buffers, orders, 2, path=path,
            seeds=seeds,
        )  # fmt: skip
        return {**trained[0], **trained[1]}

    raised = _DoomedSGD.raised
    lost, quietly, clean = train(failing), train(quiet), train("clean")
    assert _DoomedSGD.raised > raised  # the optimizer did raise
    for name, value in lost.items():
        if name in parameters:
            assert torch.isnan(value[doomed]).all()
            # quietly blown up: not finite, or (BatchNorm makes a network blind to its weights'
            # scale: the ResNet on convnet.c) finite but at the scale of lr * 1e30
            blown = quietly[name][doomed]
            assert not torch.isfinite(blown).all() or bool(blown.abs().max() > 1e20), name
        assert torch.equal(value[~doomed], quietly[name][~doomed]), name
        assert torch.equal(value[~doomed], clean[name][~doomed]), name
        assert torch.isfinite(value[~doomed].float()).all()


def test_a_bug_that_comes_while_networks_of_the_stack_are_nan_still_stops_the_training(monkeypatch):
    """At step 5 some networks are NaN and the optimizer raises on all of them (its bug): the
    rule trains the finite ones again without them, the bug comes again on finite numbers, and
    that error is raised, one line naming the optimizer and step."""
    import torch
    from torch import nn

    from benchsuite.engine.batches import optimizer_seed, round_orders
    from benchsuite.engine.training import initial_parameters, train_networks
    from benchsuite.errors import OptimizerStepError
    from benchsuite.records import PriorSpec, kaiming_uniform_bound

    spec, _ = _doomed_registry()
    module, shape = _stack_case("mlp")
    x, y = torch.randn(16, *shape, generator=torch.Generator().manual_seed(0)), torch.arange(16) % 2
    prior = PriorSpec(name="kaiming-uniform", family="uniform", scale=kaiming_uniform_bound)
    parameters, buffers = initial_parameters(module, prior, 7, range(12), "cpu")
    orders = round_orders(7, range(12), 16, 2, "independent")
    seeds = [optimizer_seed(7, a) for a in range(12)]
    monkeypatch.setattr(_DoomedSGD, "mode", "late-bug")
    with pytest.raises(OptimizerStepError) as caught:
        train_networks(module, x, y, spec, {"lr": 0.05}, parameters, buffers, orders, 2, seeds=seeds)
    assert str(caught.value) == "optimizer 'doomed-sgd' failed at step 5: RuntimeError: a bug in the plugin"
    assert caught.value.blown_up is not None and not bool(caught.value.blown_up.any())


def test_a_stack_aware_optimizer_that_fails_on_diverged_networks_loses_them_and_the_suite_goes_on(
    tmp_path, monkeypatch
):
    """Through the runner (cells of one stack key train their rounds in one stack): the doomed
    networks are counted as diverged, every cell is ok, and every stored table (cells with their
    diverged counts, networks, metrics) equals that of a run whose optimizer raised nothing."""
    _, registry = _doomed_registry()
    document = dict(FAULTS, optimizers=[{"name": "doomed-sgd", "epochs": 20}], baselines=[])
    suite = validate_suite(document, registry, "doomed.yaml")
    tables = {}
    for failing, quiet in [("raises", "quiet"), ("linalg", "linalg-quiet")]:
        for mode in (failing, quiet):
            monkeypatch.setattr(_DoomedSGD, "mode", mode)
            raised = _DoomedSGD.raised
            run_suite(suite, tmp_path / mode, registry)
            assert (_DoomedSGD.raised > raised) == (mode == failing)
            tables[mode] = comparable_rows(tmp_path / mode / "results.sqlite")
        assert tables[failing] == tables[quiet]
        with Store.open_existing(tmp_path / failing) as store:
            cells = store.cells()
        assert len(cells) == 8 and all(c["status"] == "ok" and c["models_found"] == 6 for c in cells)
        assert sum(c["diverged"] for c in cells) > 0


def test_a_stack_aware_optimizers_own_error_on_finite_networks_still_stops_the_run_in_one_line(
    tmp_path, monkeypatch
):
    """An error that is not the numerics rule's (finite networks, not a LinAlgError) is the
    plugin's: the run stops with one line naming the optimizer and the step."""
    from benchsuite.errors import OptimizerStepError

    _, registry = _doomed_registry()
    monkeypatch.setattr(_DoomedSGD, "mode", "bug")
    document = dict(FAULTS, optimizers=[{"name": "doomed-sgd", "epochs": 20}], baselines=[])
    with pytest.raises(OptimizerStepError, match=r"^optimizer 'doomed-sgd' failed at step 2: RuntimeError: a bug in the plugin$"):
        run_suite(validate_suite(document, registry, "bug.yaml"), tmp_path, registry)


def test_a_cell_over_its_time_budget_is_stopped_and_recorded_as_timed_out(tmp_path):
    """max_seconds_per_cell 1: a G&C cell asking for 200,000 networks and a stack of two sgd
    cells training 100,000 epochs (one round would take minutes) are stopped, the stack after
    twice the budget, and recorded as timed out; the cells within budget are as usual; a suite
    without the key keeps its resolved JSON (tests/test_suite_ids.py keeps the ids)."""
    document = {
        "name": "budget", "seed": 1, "device": "cpu", "models_per_cell": 4, "max_seconds_per_cell": 1,
        "tasks": [{"dataset": "digits", "classes": [[0, 1], [3, 8]], "n_train": [4], "training_set_seeds": [200]}],
        "architectures": [{"name": "mlp", "widths": ["1/6"], "depths": [4]}],
        "optimizers": [{"name": "sgd", "epochs": 100_000}, {"name": "adam", "epochs": 5}],
        "baselines": [{"name": "gnc", "max_candidates": 10**12}, {"name": "gnc", "label": "gnc-many", "models": 200_000, "max_candidates": 10**12}],
    }  # fmt: skip
    suite = validate_suite(document, REGISTRY, "budget.yaml")
    assert suite.resolved["max_seconds_per_cell"] == 1.0
    assert "max_seconds_per_cell" not in validate_suite(dict(document, max_seconds_per_cell=None), REGISTRY, "b.yaml").resolved
    started = time.monotonic()
    rows = run_suite(suite, tmp_path, REGISTRY)
    elapsed = time.monotonic() - started
    with Store.open_existing(tmp_path) as store:
        cells = store.cells()
        networks = store.network_rows()
    status = {(c["optimizer"], c["classes"]): c for c in cells}
    for label in ("sgd", "gnc-many"):
        for pair in ("0,1", "3,8"):
            cell = status[(label, pair)]
            assert cell["status"] == "timed_out" and cell["models_found"] == 0, cell
            assert "max_seconds_per_cell 1" in cell["status_detail"]
            assert cell["seconds"] < (2 if label == "sgd" else 1) + 5  # stopped mid-round, not at its end
            # the work reported before the deadline: G&C's chunks; no training round ended in time
            assert (cell["candidates_tried"] > 0) == (label == "gnc-many")
    assert all(status[(label, pair)]["status"] == "ok" for label in ("adam", "gnc") for pair in ("0,1", "3,8"))
    assert not [n for n in networks if n["optimizer"] in ("sgd", "gnc-many")]
    assert sum(r["timed_out"] for r in rows) == 4 and elapsed < 120
    from benchsuite.reporting.display import display_rows, method_notes

    assert sum(r["optimizer"].endswith("(1 timed out)") for r in display_rows(rows)) == 4
    assert any(note.startswith("Timed out: 4 cell(s)") for note in method_notes(rows))


OOM_SCRIPT = """
import resource, sys
import torch
from benchsuite.engine.gnc import guess_and_check
from benchsuite.engine.layout import build_layout
from benchsuite.engine.sizing import chunk_bytes_per_draw
from benchsuite.execution.cells import CellContext, run_cell
from benchsuite.plugins import load_registry
from benchsuite.records import DataOptions
from benchsuite.resolved import expand
from benchsuite.suite import validate_suite

registry = load_registry(include_entry_points=False)
chunk, limit = int(sys.argv[1]), sys.argv[2] == "limit"
suite = validate_suite({"models_per_cell": 10, "device": "cpu",
    "tasks": [{"dataset": "digits", "classes": [[0, 1]], "n_train": [8], "training_set_seeds": [200]}],
    "architectures": [{"name": "mlp", "widths": [1], "depths": [4]}],
    "baselines": [{"name": "gnc", "max_candidates": 20000000, "chunk_size": chunk, "memory_fraction": 1.0,
                   "cpu_threads": 1, "early_rejection": False}]}, registry, "oom.yaml")
(cell,) = expand(suite)
context = CellContext(registry, DataOptions(), torch.device("cpu"))
task = context.task(cell)
if limit:  # a real allocation failure: the address space this process may still grow by
    status = open("/proc/self/status").read()
    size = int(status.split("VmSize:")[1].split()[0]) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (size + (768 << 20), resource.RLIM_INFINITY))
    from benchsuite.execution.cells import cell_module
    module = cell_module(cell, task, registry, context.device)
    layout = build_layout(module, registry.prior("uniform"))
    wanted = (chunk // 2) * chunk_bytes_per_draw(layout, module, task.x_train, None, False)
    try:
        torch.empty(wanted // 4, dtype=torch.float32).fill_(1)
        print("fits", wanted)
    except RuntimeError:
        print("too large", wanted)
outcome = run_cell(cell, context)
print(outcome.candidates_tried, [n.found_at for n in outcome.networks])
"""


def test_gnc_halves_its_chunk_when_memory_runs_out_and_the_cell_goes_on(tmp_path):
    """A chunk of 4 million draws under an address-space limit of 768 MB more than the process
    has: the allocation really fails (shown first), G&C halves the chunk until it fits, and the
    cell's networks are the ones an unconstrained run with small chunks finds."""
    script = tmp_path / "oom.py"
    script.write_text(OOM_SCRIPT)

    def run(*args):
        done = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, env=environment(), timeout=600, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()

    first, constrained = run("8000000", "limit")
    (free,) = run("256", "free")
    assert first.startswith("too large")
    assert constrained == free and "[]" not in free


def test_a_worker_that_dies_every_time_fails_its_unit_alone_and_a_plugins_error_stays_one_line(tmp_path):
    """`exits` ends its worker in every attempt: after the retries the run stops in one line
    naming the unit, every other cell saved. A plugin's BenchsuiteError raised in a worker
    reaches the driver as the one line the optimizer contract gives it (errors.OptimizerStepError)."""
    import crashing_plugin

    from benchsuite.errors import BenchsuiteError

    registry = load_registry(include_entry_points=False, extra=[("crashing", crashing_plugin)])
    small = dict(FAULTS, tasks=[dict(FAULTS["tasks"][0], classes=[[0, 1]], n_train=[4], training_set_seeds=[200])])
    dying = validate_suite(dict(small, optimizers=[{"name": "sgd", "epochs": 20}, {"name": "exits"}]), registry, "dies.yaml")
    with pytest.raises(BenchsuiteError, match=r"1 unit\(s\) of cells never finished: their worker died 2 times \(exits on digits 0 vs 1 N=4 training set 200: exit code 3\)"):
        run_suite(dying, tmp_path / "dies", registry, executor="processes", executor_options={"jobs": 2, "retries": 1})
    with Store.open_existing(tmp_path / "dies") as store:
        assert sorted(c["optimizer"] for c in store.cells()) == ["gnc", "sgd"]
    failing = validate_suite(dict(small, optimizers=[{"name": "fails"}]), registry, "fails.yaml")
    with pytest.raises(BenchsuiteError, match=r"^optimizer 'fails' failed while being built: BenchsuiteError: the optimizer 'fails' refuses to build \(a plugin's one-line error\)$"):
        run_suite(failing, tmp_path / "fails", registry, executor="processes", executor_options={"jobs": 1})
