"""The in-process runner of the CLI tests (cli_runner.cli) answers like a process and leaves the
test process as it found it."""

from __future__ import annotations

import os
import warnings

import torch
import yaml
from cli_runner import cli

from benchsuite import cli as cli_module
from benchsuite.plugins import default_registry

SUITE = {
    "name": "runner",
    "device": "cpu",
    "models_per_cell": 2,
    "tasks": [{"dataset": "digits", "classes": [[0, 1]], "n_train": [2], "training_set_seeds": [200]}],
    "architectures": [{"name": "mlp", "widths": [1], "depths": [1]}],
    "baselines": [{"name": "gnc"}],
}


def test_exit_codes_and_streams_are_a_process_s(tmp_path):
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(SUITE))
    valid = cli("validate", "suite.yaml", cwd=tmp_path)  # a relative path, read from cwd
    assert valid.returncode == 0 and "suite.yaml: valid" in valid.stdout and valid.stderr == ""
    assert valid.args == ["benchsuite", "validate", "suite.yaml"]
    missing = cli("validate", "suite.yaml")
    assert missing.returncode == 2 and missing.stdout == "" and len(missing.stderr.strip().splitlines()) == 1
    usage = cli("no-such-command")
    assert usage.returncode == 2 and "Usage: benchsuite" in usage.stderr
    assert cli("--help").returncode == 0


def test_the_process_state_comes_back(tmp_path):
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(SUITE))
    cwd, environment, filters = os.getcwd(), dict(os.environ), list(warnings.filters)
    consoles, threads = (cli_module.console, cli_module.stdout), torch.get_num_threads()
    registry = default_registry()
    result = cli("run", "suite.yaml", "--out", "out", "-q", cwd=tmp_path, BENCHSUITE_RUNNER_TEST="1")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "results.sqlite").is_file()
    assert os.getcwd() == cwd and dict(os.environ) == environment and warnings.filters == filters
    assert (cli_module.console, cli_module.stdout) == consoles and torch.get_num_threads() == threads
    assert default_registry() is not registry  # each call loads the plugins afresh, as a process does
