"""Hostile and broken input (issue 15): each test feeds the input an adversary would and checks
that nothing escapes the output folder, no command reaches a reader's shell, no resource runs
away and no broken store turns into a "citable" leaderboard. Real files, databases and
subprocesses throughout."""

from __future__ import annotations

import csv
import io
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from benchsuite.errors import BenchsuiteError

CLI = [sys.executable, "-m", "benchsuite.cli"]
HOSTILE_NAME = "../../../escaped; touch {marker} #"
FORMULA = '=HYPERLINK("http://evil.example","x")'
INJECTED = "a\n| injected | row |<script>alert(1)</script>"
ESCAPED_MATH = "\x1b[31mred$\\undefinedmacro$"


def cli(*args: str, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, check=False, cwd=cwd, env=env
    )


def tiny_suite(**changes) -> dict:
    """One digits task, one small MLP, a few networks: a suite that runs in seconds."""
    suite = {
        "name": "tiny",
        "seed": 0,
        "device": "cpu",
        "models_per_cell": 2,
        "tasks": [{"dataset": "digits", "classes": [[0, 1]], "n_train": [2], "training_set_seeds": [200]}],
        "architectures": [{"name": "mlp", "widths": [1], "depths": [1]}],
        "baselines": [{"name": "gnc", "max_candidates": 200_000}],
    }
    suite.update(changes)
    return suite


def write(path: Path, document) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(document if isinstance(document, str) else yaml.safe_dump(document, sort_keys=False))
    return path


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


# ---------------------------------------------------------------------------------------------
# one hostile run, used by the output-path, README and escaping tests


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    """A suite whose name climbs out of runs/ and carries a shell command, and whose labels carry
    a spreadsheet formula, a Markdown row with HTML, an ESC sequence and a math macro; run from a
    nested folder without --out."""
    root = tmp_path_factory.mktemp("hostile")
    marker = root / "touched"
    labels = (FORMULA, INJECTED, ESCAPED_MATH)
    suite = tiny_suite(
        name=HOSTILE_NAME.format(marker=marker),
        optimizers=[{"name": "sgd", "label": label, "lr": 0.1, "epochs": 20} for label in labels],
    )
    path = write(root / "suite.yaml", suite)
    cwd = root / "a" / "b" / "c"
    cwd.mkdir(parents=True)
    result = cli("run", str(path), "-q", cwd=cwd)
    assert result.returncode == 0, result.stderr
    return root, cwd, marker, result


def test_suite_name_cannot_leave_the_runs_folder(hostile_run):
    root, cwd, marker, result = hostile_run
    (out,) = (cwd / "runs").iterdir()
    from benchsuite.paths import safe_folder_name

    assert out.name == safe_folder_name(HOSTILE_NAME.format(marker=marker)) and out.name.startswith("escaped-touch-")
    assert ".." not in out.name and "/" not in out.name and ";" not in out.name and " " not in out.name
    assert (out / "results.sqlite").is_file()
    outside = {p for p in files_under(root) if not p.startswith("a/b/c/runs") and p not in ("a", "a/b", "a/b/c", "suite.yaml")}
    assert outside == set() and not marker.exists()
    assert f"output folder: {out.resolve()}" in result.stderr


def test_absolute_suite_name_stays_under_runs(tmp_path):
    target = tmp_path / "absolute-target"
    path = write(tmp_path / "suite.yaml", tiny_suite(name=str(target)))
    result = cli("validate", str(path))
    assert result.returncode == 0, result.stderr
    from benchsuite.paths import default_out

    out = default_out(str(target))
    assert out.parent == Path("runs") and not out.is_absolute() and out.name == str(target).strip("/").replace("/", "-")
    assert default_out("..") == Path("runs/suite") and default_out("/") == Path("runs/suite")


def test_published_readme_commands_are_quoted_and_run_back_exactly(hostile_run, tmp_path):
    _, cwd, marker, _ = hostile_run
    (out,) = (cwd / "runs").iterdir()
    target = tmp_path / "board; touch $HOME/x"
    result = cli("publish", str(out), "--to", str(target))
    assert result.returncode == 0, result.stderr
    readme = (target / "README.md").read_text()
    block = readme.split("## Reproduce", 1)[1].split("```")[1].strip().splitlines()
    # run the block in a real shell, with a `benchsuite` that records the words it was given
    bin_dir = tmp_path / "bin"
    log = tmp_path / "argv.log"
    write(bin_dir / "benchsuite", f'#!/bin/sh\nfor a in "$@"; do printf "%s\\0" "$a" >> {shlex.quote(str(log))}; done\nprintf "\\n\\0" >> {shlex.quote(str(log))}\n')
    (bin_dir / "benchsuite").chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    subprocess.run(["sh", "-c", "\n".join(block)], check=True, env=env, cwd=tmp_path, timeout=30)
    calls = [c.split("\0")[:-1] for c in log.read_text().split("\n\0") if c]
    from benchsuite.paths import default_out

    runs = str(default_out(HOSTILE_NAME.format(marker=marker)))
    assert calls == [
        ["validate", f"{target}/suite.yaml"],
        ["run", f"{target}/suite.yaml", "--out", runs],
        ["compare", runs, str(target)],
    ]
    assert not marker.exists() and not (Path.home() / "x").exists()


# ---------------------------------------------------------------------------------------------
# publish --to


def test_publish_refuses_a_folder_it_did_not_write_even_with_force(hostile_run, tmp_path):
    _, cwd, _, _ = hostile_run
    (out,) = (cwd / "runs").iterdir()
    mine = write(tmp_path / "mine" / "README.md", "my notes\n").parent
    (mine / "suite.yaml").write_text("mine: true\n")
    for extra in ((), ("--force",)):
        result = cli("publish", str(out), "--to", str(mine), "--no-figures", *extra)
        assert result.returncode == 2 and "not a published leaderboard" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert (mine / "README.md").read_text() == "my notes\n" and files_under(mine) == {"README.md", "suite.yaml"}


def test_publish_replaces_a_published_folder_only_with_force(hostile_run, tmp_path):
    from benchsuite.publish import publish

    _, cwd, _, _ = hostile_run
    (out,) = (cwd / "runs").iterdir()
    target = tmp_path / "board"
    publish([out], target, figures=False)
    with pytest.raises(BenchsuiteError, match="--force"):
        publish([out], target, figures=False)
    publish([out], target, figures=False, force=True)
    assert (target / "README.md").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["board"]  # no staging folder left behind


def test_a_failed_publish_leaves_nothing_half_written(hostile_run, tmp_path, monkeypatch):
    from benchsuite import publish as publishing

    _, cwd, _, _ = hostile_run
    (out,) = (cwd / "runs").iterdir()
    target = tmp_path / "board"
    publishing.publish([out], target, figures=False)
    before = {p: (target / p).read_bytes() for p in files_under(target) if (target / p).is_file()}

    def broken_readme(*args, **kwargs):  # a failure late in the publish, after the database
        raise BenchsuiteError("README failed")

    monkeypatch.setattr(publishing, "readme", broken_readme)
    with pytest.raises(BenchsuiteError, match="README failed"):
        publishing.publish([out], target, figures=False, force=True)
    with pytest.raises(BenchsuiteError, match="README failed"):
        publishing.publish([out], tmp_path / "fresh", figures=False)
    assert {p: (target / p).read_bytes() for p in files_under(target) if (target / p).is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["board"]


# ---------------------------------------------------------------------------------------------
# escaping per format


def test_csv_cells_cannot_be_formulas(hostile_run):
    _, cwd, _, _ = hostile_run
    (out,) = (cwd / "runs").iterdir()
    records = list(csv.DictReader(io.StringIO((out / "leaderboard.csv").read_text())))
    labels = {r["optimizer"] for r in records}
    assert "'" + FORMULA in labels and FORMULA not in labels
    assert all(not v.startswith(("=", "+", "@")) for r in records for v in r.values())
    from benchsuite.escaping import csv_cell

    assert csv_cell(-3.5) == -3.5 and csv_cell("-1+1") == "'-1+1" and csv_cell("@SUM(A1)") == "'@SUM(A1)"


def test_markdown_labels_cannot_add_rows_or_html(hostile_run, tmp_path):
    _, cwd, _, _ = hostile_run
    (out,) = (cwd / "runs").iterdir()
    target = tmp_path / "board"
    assert cli("publish", str(out), "--to", str(target), "--no-figures").returncode == 0
    for text in ((out / "leaderboard.md").read_text(), (target / "README.md").read_text()):
        assert "<script>" not in text and "&lt;script&gt;" in text
        assert not any(line.startswith(("| injected", "row |")) for line in text.splitlines())
        assert "injected" in text
        for table in text.split("\n\n"):  # every row of a table has the header's columns
            rows = [line.replace("\\|", "") for line in table.splitlines() if line.startswith("|")]
            assert len({row.count("|") for row in rows}) <= 1, table


def test_terminal_output_carries_no_control_characters(hostile_run):
    _, cwd, _, _ = hostile_run
    (out,) = (cwd / "runs").iterdir()
    result = cli("leaderboard", str(out))
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout + result.stderr and "\\x1b[31mred" in result.stdout


def test_plot_labels_are_plain_text(hostile_run):
    pytest.importorskip("matplotlib")
    _, cwd, _, _ = hostile_run
    (out,) = (cwd / "runs").iterdir()
    result = cli("plot", str(out))
    assert result.returncode == 0, result.stderr
    svgs = list((out / "figures").glob("*.svg"))
    assert svgs and all(p.stat().st_size > 1000 for p in svgs)


# ---------------------------------------------------------------------------------------------
# store integrity


@pytest.fixture()
def stored(tmp_path):
    from stored_results import make_results

    return make_results(tmp_path / "results", pairs=((0, 1),), n_trains=(4,), seeds=(200, 201), models=3)


def schema_of(database: Path) -> list[tuple]:
    import sqlite3

    with sqlite3.connect(database) as db:
        return db.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()


def test_a_missing_table_is_an_error_never_recreated_empty(stored, tmp_path):
    import sqlite3

    with sqlite3.connect(stored / "results.sqlite") as db:
        db.execute("DROP VIEW network_rows")
        db.execute("DROP TABLE network_metrics")
        db.execute("DROP TABLE networks")
    schema = schema_of(stored / "results.sqlite")
    suite = write(tmp_path / "suite.yaml", tiny_suite())
    for command in (
        ["leaderboard", str(stored)],
        ["plot", str(stored)],
        ["publish", str(stored), "--to", str(tmp_path / "board")],
        ["compare", str(stored), "--optimizers", "sgd", "adam"],
        ["run", str(suite), "--out", str(stored), "-q"],
    ):
        result = cli(*command)
        assert result.returncode == 2, (command, result.stderr)
        assert "table 'networks' is missing" in result.stderr or "table 'network_metrics' is missing" in result.stderr
        assert [line.startswith("error:") for line in result.stderr.strip().splitlines()][-1:] == [True]
        assert schema_of(stored / "results.sqlite") == schema  # nothing re-created
    assert not (tmp_path / "board").exists() and not (stored / "figures").exists()


def test_an_altered_table_is_an_error(stored):
    import sqlite3

    with sqlite3.connect(stored / "results.sqlite") as db:
        db.execute("DROP VIEW network_rows")
        db.execute("ALTER TABLE networks DROP COLUMN test_acc")
    result = cli("leaderboard", str(stored))
    assert result.returncode == 2 and "table 'networks' lacks column(s) test_acc" in result.stderr


def test_reading_commands_never_create_a_schema(tmp_path):
    empty = tmp_path / "results.sqlite"
    empty.write_bytes(b"")
    garbage = write(tmp_path / "garbage" / "results.sqlite", "not a database\n" * 100)
    for folder in (tmp_path, garbage.parent):
        result = cli("leaderboard", str(folder))
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert empty.read_bytes() == b"" and garbage.read_text() == "not a database\n" * 100


def test_publish_checks_integrity_and_lost_networks(stored, tmp_path):
    import sqlite3

    with sqlite3.connect(stored / "results.sqlite") as db:
        db.execute("DELETE FROM network_metrics")
        db.execute("DELETE FROM networks WHERE model_index = 0")
    result = cli("publish", str(stored), "--to", str(tmp_path / "board"), "--no-figures")
    assert result.returncode == 2 and "networks were lost" in result.stderr, result.stderr
    assert not (tmp_path / "board").exists()
