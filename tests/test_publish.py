"""`benchsuite publish` and `benchsuite compare`, through the command line (run in-process)."""

from __future__ import annotations

import json
import sqlite3
from itertools import product
from pathlib import Path
from statistics import fmean

import pytest
import yaml
from benchsuite.plugins import load_registry
from benchsuite.suite import load_suite
from cli_runner import cli
from stored_results import ENVIRONMENT, SUITE, make_results

from benchsuite.errors import BenchsuiteError
from benchsuite.leaderboard import leaderboard_from_store
from benchsuite.publish import publish
from benchsuite.reporting.json_rows import to_json
from benchsuite.store import Store

SMALL = {"pairs": ((0, 1),), "n_trains": (4, 8), "seeds": (200, 201, 202), "models": 8}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """One suite's results whole, and split across two folders (as two machines would write)."""
    root = tmp_path_factory.mktemp("publish")
    whole = make_results(root / "whole", **SMALL)
    part_a = make_results(root / "a", skip_optimizers=("adam",), **SMALL)
    part_b = make_results(root / "b", skip_optimizers=("sgd", "gnc"), **SMALL)
    return root, whole, part_a, part_b


@pytest.fixture(scope="module")
def published(folders):
    root, _whole, part_a, part_b = folders
    target = root / "leaderboards" / "fixture"
    result = cli("publish", str(part_a), str(part_b), "--to", str(target))
    assert result.returncode == 0, result.stderr
    return target, result


def rows_of(folder: Path) -> list[dict]:
    with Store(folder / "results.sqlite") as store:
        return json.loads(to_json(leaderboard_from_store(store)))


def test_publish_merges_into_the_leaderboard_of_the_whole(folders, published):
    _, whole, _, _ = folders
    target, result = published
    assert "published 36 cells from 2 folder(s)" in result.stderr.replace("\n", " ")
    assert json.loads((target / "leaderboard.json").read_text()) == rows_of(whole)
    with sqlite3.connect(target / "results.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 2
        assert db.execute("SELECT COUNT(*) FROM networks").fetchone()[0] == 36 * 8
        orphans = db.execute(
            "SELECT COUNT(*) FROM cells WHERE run_id NOT IN (SELECT run_id FROM runs)"
        ).fetchone()[0]
        assert orphans == 0
        sources = json.loads(
            db.execute("SELECT value FROM meta WHERE key = 'published_from'").fetchone()[0]
        )
    assert [Path(s).name for s in sources] == ["a", "b"]


def test_publish_writes_every_format_suite_environment_and_readme(published):
    target, _ = published
    for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.json", "leaderboard.tex", "leaderboard.html",
                 "statistics.json", "suite.yaml", "suite.json", "environment.json", "README.md"):  # fmt: skip
        assert (target / name).is_file(), name
    # suite.yaml is runnable as it is and resolves to exactly the suite that ran
    registry = load_registry(include_entry_points=False)
    assert load_suite(target / "suite.yaml", registry).resolved == SUITE
    assert json.loads((target / "suite.json").read_text()) == SUITE
    environment = json.loads((target / "environment.json").read_text())
    assert environment["suite_id"] == "suite0000fixture" and len(environment["runs"]) == 2
    summary = environment["summary"]
    assert summary["git_commits"] == [ENVIRONMENT["git_commit"]]
    assert summary["packages"]["torch"] == [ENVIRONMENT["packages"]["torch"]]
    assert summary["devices"] == ["cpu (x86_64)"]
    assert summary["plugins"] == [
        {"name": "benchsuite.builtins", "distribution": "benchsuite", "version": "0.1.0"}
    ]
    assert environment["statistics"]["seed"] == 0
    readme = (target / "README.md").read_text()
    assert "suite0000fixture" in readme and "## Reproduce" in readme and "benchsuite run" in readme
    assert "| sgd |" in readme and "## Across tasks" in readme
    assert "IQM gain pp [95% CI]" in readme and "profile τ=1" in readme
    assert "| mlp w=1 d=4: IQM gain pp [95% CI] | mlp w=1 d=4: rank |" in readme  # two widths: by architecture
    page = (target / "leaderboard.html").read_text()
    assert ENVIRONMENT["git_commit"] in page


def test_publish_draws_and_embeds_figures(published):
    pytest.importorskip("matplotlib")
    pytest.importorskip("benchsuite.plots")
    target, _ = published
    pngs = sorted((target / "figures").glob("*.png"))
    assert pngs and all(p.read_bytes().startswith(b"\x89PNG") for p in pngs)
    page = (target / "leaderboard.html").read_text()
    assert page.count("data:image/png;base64,") == len(pngs)


def test_publish_refuses_another_suite_in_one_line(folders, tmp_path):
    _root, whole, _, _ = folders
    other = make_results(
        tmp_path / "other", suite=dict(SUITE, name="other"), suite_id="otherSuite000000", **SMALL
    )
    result = cli("publish", str(whole), str(other), "--to", str(tmp_path / "target"))
    assert result.returncode == 2
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert (
        "different resolved suites" in message
        and "otherSuite000000" in message
        and "suite0000fixture" in message
    )
    assert not (tmp_path / "target" / "results.sqlite").exists()


def test_publish_refuses_to_overwrite_unless_forced_and_skips_duplicates(folders, tmp_path):
    _, whole, part_a, _ = folders
    target = tmp_path / "board"
    first = publish([whole], target, figures=False)
    assert first.cells == 36 and first.duplicate_cells == 0
    with pytest.raises(BenchsuiteError, match="--force"):
        publish([whole], target, figures=False)
    again = publish([whole, part_a], target, force=True, figures=False)
    assert again.cells == 36 and again.duplicate_cells == 24  # part_a's cells are all in whole
    assert json.loads((target / "leaderboard.json").read_text()) == rows_of(whole)
    with pytest.raises(BenchsuiteError, match="given twice"):
        publish([whole, whole], tmp_path / "twice", figures=False)
    with pytest.raises(BenchsuiteError, match="no results database"):
        publish([tmp_path / "missing"], tmp_path / "x", figures=False)


def test_compare_folders_row_by_row(folders, published, tmp_path):
    _, whole, _, _ = folders
    target, _ = published
    same = cli("compare", str(whole), str(target), "--format", "json")
    assert same.returncode == 0, same.stderr
    record = json.loads(same.stdout)
    assert record["summary"]["rows"] == 12 and record["summary"]["ties"] == 12
    assert all(r["difference_pp"] == 0 and r["p_value"] == 1.0 for r in record["rows"])
    # another draw of the same suite (say, another machine): per-row differences, recomputed here
    from benchsuite.compare import compare_folders

    rerun = make_results(tmp_path / "rerun", rng_seed=1, **SMALL)
    moved = compare_folders(whole, rerun)
    raw = {folder: _per_set_means(folder) for folder in (whole, rerun)}
    assert len(moved.rows) == 12 and moved.summary()["ties"] == 0
    for row in moved.rows:
        key = ("digits", "0,1", row["n_train"], row["architecture"], row["optimizer_a"])
        a, b = raw[whole][key], raw[rerun][key]
        assert row["difference_pp"] == pytest.approx(100 * fmean(a[s] - b[s] for s in a), abs=1e-9)
        assert row["optimizer_a"] == row["optimizer_b"]


def test_compare_refuses_different_suites_unless_asked(folders, tmp_path):
    _, whole, _, _ = folders
    other = make_results(
        tmp_path / "other", suite=dict(SUITE, name="other"), suite_id="otherSuite000000", **SMALL
    )
    refused = cli("compare", str(whole), str(other))
    assert (
        refused.returncode == 2
        and "--any-suite" in refused.stderr
        and len(refused.stderr.strip().splitlines()) == 1
    )
    from benchsuite.compare import compare_folders

    assert len(compare_folders(whole, other, any_suite=True).rows) == 12


def test_compare_two_optimizers_task_by_task(folders):
    _, whole, _, _ = folders
    result = cli("compare", str(whole), "--optimizers", "sgd", "adam", "--format", "json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    raw = _per_set_means(whole)
    rows = record["rows"]
    assert len(rows) == 4  # 1 pair x 2 N x 2 widths
    p_values = []
    for row in rows:
        key = ("digits", "0,1", row["n_train"], row["architecture"])
        a, b = raw[key + ("sgd",)], raw[key + ("adam",)]
        differences = [a[s] - b[s] for s in sorted(a)]
        assert row["difference_pp"] == pytest.approx(100 * fmean(differences), abs=1e-9)
        flips = [
            abs(sum(x * d for x, d in zip(signs, differences)))
            for signs in product((1, -1), repeat=len(differences))
        ]
        p_values.append(sum(f >= abs(sum(differences)) - 1e-12 for f in flips) / len(flips))
        assert row["p_value"] == pytest.approx(p_values[-1])
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        assert rows[i]["p_value_holm"] == pytest.approx(running)
    from benchsuite.compare import compare_optimizers

    with pytest.raises(BenchsuiteError, match="did you mean 'adam'"):
        compare_optimizers(whole, "sgd", "adm")
    baseline = compare_optimizers(whole, "sgd", "gnc")  # a baseline is a valid side too
    assert all(r["difference_pp"] > 0 for r in baseline.rows)


def _per_set_means(folder: Path) -> dict[tuple, dict[int, float]]:
    with sqlite3.connect(folder / "results.sqlite") as db:
        records = db.execute(
            "SELECT c.dataset, c.classes, c.n_train, c.architecture, c.optimizer, c.training_set_seed, AVG(n.test_acc) "
            "FROM networks n JOIN cells c USING (cell_id) GROUP BY c.cell_id"
        ).fetchall()
    means: dict[tuple, dict[int, float]] = {}
    for *key, seed, mean in records:
        means.setdefault(tuple(key), {})[seed] = mean
    return means


def test_publish_says_what_the_cells_cost_from_the_stored_rows(published):
    import sqlite3

    from benchsuite.publish import cost_line

    target, _ = published
    cost = json.loads((target / "environment.json").read_text())["cost"]
    with sqlite3.connect(f"file:{target / 'results.sqlite'}?mode=ro", uri=True) as db:
        sums = {role: (n, s, c) for role, n, s, c in db.execute(
            "SELECT role, COUNT(*), SUM(seconds), SUM(candidates_tried) FROM cells GROUP BY role")}  # fmt: skip
    assert (cost["optimizer_cells"], cost["networks_trained"]) == (sums["optimizer"][0], sums["optimizer"][2])
    assert (cost["baseline_cells"], cost["baseline_candidates"]) == (sums["baseline"][0], sums["baseline"][2])
    assert cost["optimizer_seconds"] == pytest.approx(sums["optimizer"][1])
    assert cost["baseline_seconds"] == pytest.approx(sums["baseline"][1])
    assert cost["tuning_trials"] == 0 and cost["total_seconds"] == pytest.approx(sums["optimizer"][1] + sums["baseline"][1])
    readme = (target / "README.md").read_text()
    assert cost_line(cost) in readme and "tuning trials" not in cost_line(cost)  # none were run
    tuned = {**cost, "tuning_trials": 12672, "tuning_seconds": 4.86 * 3600, "total_seconds": cost["total_seconds"] + 4.86 * 3600}
    assert "4.9 h in 12,672 tuning trials" in cost_line(tuned)
