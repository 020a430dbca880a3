"""End to end: `benchsuite run` on the bundled digits, resume after a killed run, and a
leaderboard that equals a recomputation from the raw database rows."""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from statistics import fmean, pstdev

import pytest
import yaml
from cli_runner import cli

CLI = [sys.executable, "-m", "benchsuite.cli"]  # a real process, for the run that is killed

SMALL = {
    "name": "small",
    "seed": 3,
    "device": "cpu",
    "models_per_cell": 6,
    "tasks": [{"dataset": "digits", "classes": [[0, 1], [3, 8]], "n_train": [4, 6], "training_set_seeds": [200, 201]}],
    "architectures": [{"name": "mlp", "widths": ["2/6"], "depths": [2]}],
    "optimizers": [{"name": "sgd"}, {"name": "adam"}],
    "baselines": [{"name": "gnc", "max_candidates": 5_000_000}],
}


def write_suite(tmp_path: Path, document: dict = SMALL) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def cells_in(database: Path) -> list[tuple]:
    with sqlite3.connect(database) as db:
        return db.execute("SELECT cell_id, finished_at, models_found FROM cells ORDER BY cell_id").fetchall()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("run")
    suite = write_suite(tmp_path)
    out = tmp_path / "out"
    result = cli("run", str(suite), "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out, result


def test_run_writes_the_contracted_files(finished_run):
    out, result = finished_run
    for name in ("results.sqlite", "leaderboard.md", "leaderboard.csv", "leaderboard.json"):
        assert (out / name).is_file(), name
    rows = json.loads((out / "leaderboard.json").read_text())
    # 2 pairs x 2 N x 1 architecture x 3 methods
    assert len(rows) == 12
    for row in rows:
        for key in ("dataset", "classes", "n_train", "architecture", "optimizer", "test_acc_mean", "test_acc_std", "models", "gain_pp", "neg_log2_p_fit", "candidates", "seconds"):
            assert key in row
        assert 0 <= row["test_acc_mean"] <= 1 and 0 <= row["test_acc_std"] <= 1
        assert row["models"] == 12  # 6 per cell, two training sets
        if row["optimizer"] == "gnc":
            assert row["gain_pp"] is None and row["candidates"] >= row["models"]
            assert 0 < row["neg_log2_p_fit"] < 3 * row["n_train"]
        else:
            assert row["gain_pp"] is not None
    assert "Leaderboard: small" in result.stdout and "gain" in result.stdout


def test_every_stored_network_fits_its_training_set(finished_run):
    out, _ = finished_run
    with sqlite3.connect(out / "results.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM networks WHERE train_acc < 1").fetchone()[0] == 0
        assert db.execute("SELECT COUNT(*) FROM networks").fetchone()[0] == 12 * 12
        run = db.execute("SELECT suite, environment, command FROM runs").fetchone()
    assert json.loads(run[0])["name"] == "small"
    # the command recorded is the words the CLI was given, not its caller's sys.argv
    assert run[2] == f"benchsuite run {out.parent / 'suite.yaml'} --out {out}"
    environment = json.loads(run[1])
    assert environment["packages"]["torch"] and environment["device"] == "cpu"
    assert environment["compiled_kernels"] is True  # setup.sh installs the compiler they need


def test_leaderboard_equals_recomputation_from_raw_rows(finished_run):
    """Recompute protocol.md's aggregation with plain SQL and Python, independently of the code."""
    out, _ = finished_run
    rows = json.loads((out / "leaderboard.json").read_text())
    with sqlite3.connect(out / "results.sqlite") as db:
        raw = db.execute(
            "SELECT c.dataset, c.classes, c.n_train, c.architecture, c.optimizer, c.training_set_seed, "
            "n.test_acc, c.models_found, c.candidates_tried, c.seconds, c.cell_id FROM networks n JOIN cells c USING (cell_id)"
        ).fetchall()
    per_set = defaultdict(list)
    cell_info = {}
    for dataset, classes, n, arch, opt, ts, acc, found, tried, seconds, cell_id in raw:
        per_set[(dataset, classes, n, arch, opt, ts)].append(acc)
        cell_info[cell_id] = (dataset, classes, n, arch, opt, found, tried, seconds)
    for row in rows:
        key = (row["dataset"], ",".join(map(str, row["classes"])), row["n_train"], row["architecture"], row["optimizer"])
        means = {k[-1]: fmean(v) for k, v in per_set.items() if k[:5] == key}
        assert row["test_acc_mean"] == pytest.approx(fmean(means.values()), abs=1e-12)
        assert row["test_acc_std"] == pytest.approx(pstdev(means.values()), abs=1e-12)
        cells = [c for c in cell_info.values() if c[:5] == key]
        assert row["seconds"] == pytest.approx(sum(c[7] for c in cells))
        if row["optimizer"] == "gnc":
            assert row["candidates"] == sum(c[6] for c in cells)
            expected = fmean(-math.log2(c[5] / c[6]) for c in cells)
            assert row["neg_log2_p_fit"] == pytest.approx(expected, abs=1e-12)
        else:
            base = {k[-1]: fmean(v) for k, v in per_set.items() if k[:4] == key[:4] and k[4] == "gnc"}
            expected = 100 * fmean(means[s] - base[s] for s in means)
            assert row["gain_pp"] == pytest.approx(expected, abs=1e-9)


def test_leaderboard_command_rebuilds_the_same_rows(finished_run, tmp_path):
    out, _ = finished_run
    before = json.loads((out / "leaderboard.json").read_text())
    (out / "leaderboard.json").unlink()
    result = cli("leaderboard", str(out), "--format", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "leaderboard.json").read_text()) == before


def test_rerun_skips_finished_cells(finished_run):
    out, _ = finished_run
    before = cells_in(out / "results.sqlite")
    suite = out.parent / "suite.yaml"
    result = cli("run", str(suite), "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    assert cells_in(out / "results.sqlite") == before


def test_resume_after_a_killed_run(tmp_path):
    document = dict(SMALL, name="killed", models_per_cell=8)
    suite = write_suite(tmp_path, document)
    out = tmp_path / "out"
    database = out / "results.sqlite"
    process = subprocess.Popen([*CLI, "run", str(suite), "--out", str(out), "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline:
        if database.exists():
            try:
                if len(cells_in(database)) >= 3:
                    break
            except sqlite3.OperationalError:
                pass
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    survived = cells_in(database)
    assert 3 <= len(survived) < 24, "the run was not killed mid-way"
    result = cli("run", str(suite), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert f"resuming: {len(survived)} of 24 cells already done" in result.stderr.replace("\n", " ")
    after = cells_in(database)
    assert len(after) == 24
    assert set(survived) <= set(after)  # finished cells were kept as they were
    with sqlite3.connect(database) as db:
        counts = db.execute("SELECT c.models_found, COUNT(n.model_index) FROM cells c LEFT JOIN networks n USING (cell_id) GROUP BY c.cell_id").fetchall()
    assert all(found == stored for found, stored in counts)  # no cell half written


def test_same_suite_same_results(tmp_path, finished_run):
    out, _ = finished_run
    again = tmp_path / "again"
    result = cli("run", str(write_suite(tmp_path)), "--out", str(again), "--quiet")
    assert result.returncode == 0, result.stderr
    query = "SELECT c.cell_id, n.model_index, n.found_at, n.test_acc FROM networks n JOIN cells c USING (cell_id) ORDER BY 1, 2"
    with sqlite3.connect(out / "results.sqlite") as a, sqlite3.connect(again / "results.sqlite") as b:
        assert a.execute(query).fetchall() == b.execute(query).fetchall()


def test_cells_trained_together_store_what_cells_trained_one_by_one(tmp_path, finished_run):
    """The CLI trains gradient cells that differ only in class pair and training set in one stack
    (runner.group_cells); cell by cell, through the per-step path with torch.optim and the
    caller's threads for evaluation, every stored number but the timings is the same."""
    import torch

    from benchsuite.engine import threads, training
    from benchsuite.plugins import default_registry
    from benchsuite.runner import run_suite
    from benchsuite.suite import load_suite

    out, _ = finished_run
    suite = load_suite(write_suite(tmp_path), default_registry())
    saved_threads, saved_policy = torch.get_num_threads(), threads.ENABLED
    threads.ENABLED = False
    torch.set_num_threads(2)  # the evaluation's thread count must not matter either
    try:
        with training.per_step_path():
            run_suite(suite, tmp_path / "one-by-one", group_cells=False)
    finally:
        threads.ENABLED = saved_policy
        torch.set_num_threads(saved_threads)
    queries = [
        "SELECT cell_id, models_found, candidates_tried, epochs, exhausted, seed FROM cells ORDER BY 1",
        "SELECT cell_id, model_index, found_at, train_acc, test_acc FROM networks ORDER BY 1, 2",
    ]
    with sqlite3.connect(out / "results.sqlite") as a, sqlite3.connect(tmp_path / "one-by-one" / "results.sqlite") as b:
        for query in queries:
            assert a.execute(query).fetchall() == b.execute(query).fetchall()


def test_resuming_cells_of_another_engine_arithmetic_stops_and_cells_from_before_revisions_resume(tmp_path):
    """A cell records the engine revision of its architecture (resolved.engine_revision); a folder
    finished under another revision (the engine's bits changed since) stops the rerun in one line,
    nothing written. Cells recorded before revisions existed carry no such key and resume as they
    always did."""
    from benchsuite.engine import NUMERICS_REVISION
    from benchsuite.resolved import engine_revision
    from benchsuite.errors import BenchsuiteError
    from benchsuite.plugins import load_registry
    from benchsuite.runner import run_suite
    from benchsuite.suite import validate_suite

    now = engine_revision(NUMERICS_REVISION, "mlp")  # what its MLP cells record

    registry = load_registry(include_entry_points=False)
    document = {
        "models_per_cell": 2,
        "tasks": [{"dataset": "digits", "classes": [[0, 1]], "n_train": [4, 6], "training_set_seeds": [200]}],
        "architectures": [{"name": "mlp", "widths": ["1/6"]}], "optimizers": [{"name": "sgd", "epochs": 5}],
    }  # fmt: skip
    suite = validate_suite(document, registry, "a.yaml")
    run_suite(suite, tmp_path, registry=registry)
    database = tmp_path / "results.sqlite"
    with sqlite3.connect(database) as db:
        recorded = [json.loads(p) for (p,) in db.execute("SELECT plugins FROM cells ORDER BY n_train")]
        assert [r["engine numerics"] for r in recorded] == [f"revision {now}"] * 2
        older = {**recorded[0], "engine numerics": f"revision {now - 1}"}
        db.execute("UPDATE cells SET plugins = ? WHERE n_train = 4", (json.dumps(older),))
    before = database.read_bytes()
    with pytest.raises(BenchsuiteError, match=rf"engine numerics: revision {now - 1} then, revision {now} now"):
        run_suite(suite, tmp_path, registry=registry)
    assert database.read_bytes() == before
    with sqlite3.connect(database) as db:  # as recorded before revisions existed
        legacy = {k: v for k, v in older.items() if k != "engine numerics"}
        db.execute("UPDATE cells SET plugins = ? WHERE n_train = 4", (json.dumps(legacy),))
    run_suite(suite, tmp_path, registry=registry)  # resumes: nothing left to do, no error
    assert len(cells_in(database)) == 2


def test_a_revision_that_left_an_architecture_as_it_was_is_not_recorded_on_its_cells():
    """Revision 12 changed ResNet4's bits only: MLP and LeNet cells still record 11 (a folder of
    them begun at 11 resumes), ResNet4's record 12, and an architecture of a plugin (which may
    build on any path) always records the latest."""
    from benchsuite.engine import NUMERICS_REVISION
    from benchsuite.plugins import load_registry
    from benchsuite.resolved import cell_engine, engine_revision, expand
    from benchsuite.runner import cell_plugins
    from benchsuite.suite import validate_suite

    assert NUMERICS_REVISION == 12
    assert engine_revision(12, "mlp") == engine_revision(12, "lenet") == engine_revision(11) == 11
    assert engine_revision(12, "resnet4") == engine_revision(12) == 12
    registry = load_registry(include_entry_points=False)
    document = {
        "models_per_cell": 2,
        "tasks": [
            {"dataset": "digits", "classes": [[0, 1]], "n_train": [4], "training_set_seeds": [200]}
        ],
        "architectures": [{"name": name, "widths": ["1/6"]} for name in ("mlp", "resnet4")],
        "optimizers": [{"name": "sgd", "epochs": 5}],
    }  # fmt: skip
    suite = validate_suite(document, registry, "a.yaml")
    recorded = {
        cell.architecture.name: cell_plugins(cell, registry)["engine numerics"] for cell in expand(suite)
    }
    assert recorded == {"mlp": "revision 11", "resnet4": "revision 12"}
    # publish's reading of a run environment's revision for an earlier cell (final_suite)
    builtin, plugin = "benchsuite 0.1.0", "benchsuite-shapes 1.0"
    assert cell_engine("revision 12", "mlp", {"architecture mlp": builtin}) == "revision 11"
    assert cell_engine("revision 12", "mlp", {"architecture mlp": plugin}) == "revision 12"
    assert cell_engine("revision 12", "resnet4", {"architecture resnet4": builtin}) == "revision 12"
    assert cell_engine("revision 11", "mlp", {"architecture mlp": builtin}) == "revision 11"


def test_resuming_into_a_folder_of_another_resolved_suite_stops_unless_its_cells_are_this_suites(tmp_path):
    """Finished cells of suite A count as suite B's only when each is one of B's cells (the same
    cell id and seed, plugins and engine revision): B adds a training-set size, so A's cells keep
    their ids and B resumes with no flag, saying so. C has only another N: none of its cell ids is
    A's or B's, yet the folder's cells are no cells of C, so C stops; on_mismatch="resume" keeps
    them knowingly."""
    from benchsuite.errors import BenchsuiteError
    from benchsuite.plugins import load_registry
    from benchsuite.resolved import expand
    from benchsuite.runner import Progress, run_suite
    from benchsuite.suite import validate_suite

    class Notes(Progress):
        def __init__(self):
            self.lines = []

        def note(self, line):
            self.lines.append(line)

    registry = load_registry(include_entry_points=False)
    document = {
        "models_per_cell": 2,
        "tasks": [{"dataset": "digits", "classes": [[0, 1]], "n_train": [4], "training_set_seeds": [200]}],
        "architectures": [{"name": "mlp", "widths": ["1/6"]}], "baselines": ["gnc"],
    }  # fmt: skip
    first = validate_suite(document, registry, "a.yaml")
    notes = Notes()
    run_suite(first, tmp_path, registry=registry, progress=notes)
    assert notes.lines == []
    document["tasks"][0]["n_train"] = [4, 6]
    second = validate_suite(document, registry, "b.yaml")
    run_suite(second, tmp_path, registry=registry, progress=notes)
    assert notes.lines == [
        "resuming under another version of the suite than the folder's earlier runs; its one finished cell is a cell of this suite "
        "(same cell id, seed, plugin versions and engine revision), 1 to run"
    ]
    assert len(cells_in(tmp_path / "results.sqlite")) == 2
    document["tasks"][0]["n_train"] = [8]
    third = validate_suite(document, registry, "c.yaml")
    assert not {c.cell_id for c in expand(third)} & {row[0] for row in cells_in(tmp_path / "results.sqlite")}
    before = (tmp_path / "results.sqlite").read_bytes()
    where = ", ".join(sorted([first.suite_id, second.suite_id]))
    with pytest.raises(BenchsuiteError, match=rf"2 of its 2 finished cells are no cells of this suite {third.suite_id} \(they ran in suite {where};"):
        run_suite(third, tmp_path, registry=registry)
    assert (tmp_path / "results.sqlite").read_bytes() == before
    run_suite(third, tmp_path, registry=registry, on_mismatch="resume")
    assert len(cells_in(tmp_path / "results.sqlite")) == 3
    # on_mismatch="restart" starts afresh from a folder of another suite version, even one that fits
    again = tmp_path / "again"
    run_suite(first, again, registry=registry)
    kept = (again / "results.sqlite").read_bytes()
    run_suite(second, again, registry=registry, on_mismatch="restart")
    (superseded,) = again.glob("results.superseded-*.sqlite")
    assert superseded.read_bytes() == kept
    with sqlite3.connect(again / "results.sqlite") as db:
        assert db.execute("SELECT suite_id, COUNT(*) FROM cells GROUP BY suite_id").fetchall() == [(second.suite_id, 2)]
