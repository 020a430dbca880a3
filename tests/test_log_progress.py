"""A run whose output goes to a log (not a terminal) says each finished cell in a plain line:
rich draws no bars there, and an hours-long batch job would otherwise log nothing until the end."""

from __future__ import annotations

import re
from types import SimpleNamespace

import yaml
from cli_runner import cli
from rich.console import Console

from benchsuite.progress import LogProgress

SUITE = {
    "name": "logged",
    "device": "cpu",
    "models_per_cell": 2,
    "tasks": [{"dataset": "digits", "classes": [[0, 1]], "n_train": [2, 4], "training_set_seeds": [200]}],
    "architectures": [{"name": "mlp", "widths": [1], "depths": [1]}],
    "optimizers": [{"name": "sgd", "epochs": 5}],
    "baselines": [{"name": "gnc"}],
}
LINE = re.compile(r"\[(\d+)/(\d+)\] digits 0v1 N=(\d) s=200 mlp\S* (sgd|gnc)\S*: 2 networks, [\d,]+ s; \S+ into the run")


def test_a_logged_run_says_every_finished_cell_once_with_its_count(tmp_path):
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(SUITE))
    result = cli("run", "suite.yaml", "--out", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    matches = [LINE.fullmatch(line.strip()) for line in result.stderr.splitlines() if line.startswith("[")]
    assert all(matches) and len(matches) == 4, result.stderr
    assert [int(m[1]) for m in matches] == [1, 2, 3, 4] and {m[2] for m in matches} == {"4"}
    assert sorted((m[3], m[4]) for m in matches) == [("2", "gnc"), ("2", "sgd"), ("4", "gnc"), ("4", "sgd")]
    again = cli("run", "suite.yaml", "--out", "out", cwd=tmp_path)
    assert again.returncode == 0 and "resuming: 4 of 4 cells already done" in again.stderr
    assert not [line for line in again.stderr.splitlines() if line.startswith("[")]
    quiet = cli("run", "suite.yaml", "--out", "out2", "-q", cwd=tmp_path)
    assert quiet.returncode == 0 and not [line for line in quiet.stderr.splitlines() if line.startswith("[")]


def test_a_line_says_the_cell_its_outcome_and_the_time_into_the_run():
    console = Console(record=True, width=300)
    now = [100.0]
    progress = LogProgress(console, "output folder: out", clock=lambda: now[0])
    progress.note("resuming under another version of the suite")
    progress.start_run(total=6, skipped=2)
    cell = SimpleNamespace(
        dataset="digits", classes=(0, 1), n_train=4, training_set_seed=200,
        architecture_label="mlp[width=1]", entry=SimpleNamespace(label="sgd"),
    )  # fmt: skip
    for at, status in ((130.0, "ok"), (4000.0, "diverged")):
        now[0] = at
        progress.finish_cell(SimpleNamespace(cell=cell, status=status, size=2 if status == "ok" else 0, seconds=12.4))
    lines = console.export_text().splitlines()
    assert lines[:2] == ["output folder: out", "resuming under another version of the suite"]
    assert lines[2] == "[3/6] digits 0v1 N=4 s=200 mlp[width=1] sgd: 2 networks, 12 s; 30s into the run"
    assert lines[3] == "[4/6] digits 0v1 N=4 s=200 mlp[width=1] sgd: 0 networks (diverged), 12 s; 1h05m into the run"
