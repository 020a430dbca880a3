"""`benchsuite new-plugin` writes distributions that install, conform and run, as generated.

Real processes: pip builds and installs each generated distribution into its own folder, which a
fresh interpreter then finds through its entry point (nothing leaks into this environment).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from cli_runner import cli

CLI = [sys.executable, "-m", "benchsuite.cli"]


def generate_and_install(tmp_path: Path, kind: str, name: str) -> dict:
    result = cli("new-plugin", kind, name, "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    folder = tmp_path / f"benchsuite-{name}"
    site = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
           "--no-index", "--target", str(site), str(folder)]  # fmt: skip
    installed = subprocess.run(pip, capture_output=True, text=True, timeout=300, check=False)
    assert installed.returncode == 0, installed.stderr
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH", "")]))}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """Each kind generated and installed once; tests share the installations."""
    made = {}

    def get(kind, name):
        if (kind, name) not in made:
            root = tmp_path_factory.mktemp(name)
            made[kind, name] = (root, generate_and_install(root, kind, name))
        return made[kind, name]

    return get


def test_a_generated_plugin_installs_and_passes_check_plugin(installed):
    """The whole path once, in real processes: pip install, check-plugin, the plugin's own test."""
    tmp_path, env = installed("optimizer", "heavy-ball")
    checked = subprocess.run([*CLI, "check-plugin", "heavy-ball"], capture_output=True, text=True, env=env, timeout=600, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "optimizer heavy-ball (" in checked.stdout and "PASS" in checked.stdout
    assert "FAIL" not in checked.stdout
    own_test = tmp_path / "benchsuite-heavy-ball" / "tests"
    tested = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(own_test)],
                            capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path, check=False)  # fmt: skip
    assert tested.returncode == 0, tested.stdout + tested.stderr


@pytest.mark.parametrize(("kind", "name"), [("sampler", "plain-gnc"), ("dataset", "blobs"), ("metric", "param-norm")])
def test_every_generated_kind_conforms_as_written(tmp_path, kind, name):
    """The other kinds' generated modules, loaded as plugins in this process (their packaging is
    the optimizer's, tested above): each passes the conformance checks as generated."""
    import types

    from benchsuite.plugins import load_registry
    from benchsuite.testing import assert_conforms

    assert cli("new-plugin", kind, name, "--out", tmp_path).returncode == 0
    module_name = "benchsuite_" + name.replace("-", "_")
    source = tmp_path / f"benchsuite-{name}" / module_name / "__init__.py"
    module = types.ModuleType(module_name)
    exec(compile(source.read_text(), str(source), "exec"), module.__dict__)  # noqa: S102 - generated here
    registry = load_registry(include_entry_points=False, extra=[(module_name, module)])
    assert_conforms(name, kind=kind, registry=registry)
    assert (tmp_path / f"benchsuite-{name}" / "pyproject.toml").read_text().count(f'{name} = "{module_name}"') == 1


def test_a_generated_optimizer_runs_in_a_suite_beside_sgd_and_gnc(installed, tmp_path):
    _, env = installed("optimizer", "heavy-ball")
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "name: new-plugin\nmodels_per_cell: 3\n"
        "tasks: [{dataset: digits, classes: [[0, 1]], n_train: [4], training_set_seeds: [200]}]\n"
        "architectures: [{name: mlp, widths: ['1/6']}]\n"
        "optimizers: [{name: sgd, epochs: 5}, {name: heavy-ball, epochs: 5}]\n"
        "baselines: [gnc]\n"
    )
    out = tmp_path / "out"
    ran = subprocess.run([*CLI, "run", str(suite), "--out", str(out), "--quiet"], capture_output=True, text=True, env=env, timeout=600, check=False)
    assert ran.returncode == 0, ran.stderr
    with sqlite3.connect(out / "results.sqlite") as db:
        methods = {row[0] for row in db.execute("SELECT DISTINCT optimizer_name FROM cells")}
    assert {"sgd", "heavy-ball", "gnc"} <= methods


def test_new_plugin_refuses_a_bad_name_or_an_existing_folder_and_writes_nothing(tmp_path):
    bad = cli("new-plugin", "optimizer", "My Opt", "--out", tmp_path)
    assert bad.returncode == 2 and "plugin name 'My Opt'" in bad.stderr
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "benchsuite-taken").mkdir()
    taken = cli("new-plugin", "optimizer", "taken", "--out", tmp_path)
    assert taken.returncode == 2 and "already exists" in taken.stderr
    assert list((tmp_path / "benchsuite-taken").iterdir()) == []
