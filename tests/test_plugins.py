"""Plugin discovery through real entry points of real (tiny) installed distributions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

from benchsuite.errors import PluginError
from benchsuite.plugins import load_registry

CLI = [sys.executable, "-m", "benchsuite.cli"]


def install_distribution(site: Path, name: str, module: str, source: str, entry_name: str | None = None) -> None:
    """Install a distribution the way pip leaves one: a module plus a .dist-info with entry points."""
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{name.replace('-', '_')}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[benchsuite]\n{entry_name or module} = {module}\n")
    (info / "RECORD").write_text("")


def cli(*args: str, site: Path | None = None, check: bool = False) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH", "")]))
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, check=check, timeout=120)


def cli_here(*args: str, site: Path, monkeypatch) -> subprocess.CompletedProcess:
    """`benchsuite ARGS` in this process with `site` on sys.path: the installed distribution's
    entry point is found through its real dist-info, as in a fresh process, at a fraction of the
    cost (tests where a fresh process is the point use `cli`)."""
    from cli_runner import cli as in_process

    monkeypatch.syspath_prepend(str(site))
    try:
        return in_process(*args)
    finally:  # a fresh process would import the plugin afresh: so does the next call here
        for name, module in list(sys.modules.items()):
            if str(getattr(module, "__file__", "") or "").startswith(str(site)):
                del sys.modules[name]


PRIOR_PLUGIN = """
from benchsuite import hookimpl
from benchsuite.records import PriorSpec

@hookimpl
def benchsuite_priors():
    return [PriorSpec(name="uniform-0.5", family="uniform", scale=lambda fan_in: 0.5, description="U[-0.5, 0.5]")]
"""


def test_builtins_are_registered_like_plugins():
    registry = load_registry(include_entry_points=False)
    builtins = {p.name: p for p in registry.plugins}
    assert all(p.distribution == "benchsuite" for p in builtins.values())
    assert {"digits", "fashion-mnist", "mnist", "cifar10"} <= set(registry.names("dataset"))
    assert {"mlp", "lenet"} <= set(registry.names("architecture"))
    assert {"sgd", "adam"} <= set(registry.names("optimizer"))
    assert "gnc" in registry.names("sampler")
    assert {"uniform", "kaiming-uniform", "kaiming-normal"} <= set(registry.names("prior"))


def test_third_party_plugin_discovered_through_entry_point(tmp_path):
    site = tmp_path / "site"
    install_distribution(site, "benchsuite-halfprior", "benchsuite_halfprior", PRIOR_PLUGIN, "halfprior")
    listed = json.loads(cli("plugins", "--json", site=site, check=True).stdout)
    plugin = next(p for p in listed if p["name"] == "halfprior")
    assert plugin["distribution"] == "benchsuite-halfprior"
    assert plugin["version"] == "1.2.3"
    assert plugin["status"] == "loaded"
    assert plugin["provides"] == {"prior": ["uniform-0.5"]}


def test_broken_plugin_warns_and_the_rest_runs(tmp_path):
    site = tmp_path / "site"
    install_distribution(site, "benchsuite-broken", "benchsuite_broken", "raise ImportError('needs libfoo')\n", "broken")
    result = cli("plugins", "--json", site=site)
    assert result.returncode == 0, result.stderr
    listed = {p["name"]: p for p in json.loads(result.stdout)}
    assert listed["broken"]["status"] == "failed"
    assert "needs libfoo" in listed["broken"]["error"]
    assert listed["builtin-optimizers"]["status"] == "loaded"
    # the human listing shows it as failed too, and --verbose shows the warning naming it
    human = cli("--verbose", "plugins", site=site)
    assert "failed" in human.stdout and "broken" in human.stdout
    assert "benchsuite-broken" in human.stderr and "needs libfoo" in human.stderr


def test_a_name_given_twice_is_listed_with_the_clash_and_fails_only_where_used(tmp_path, monkeypatch):
    site = tmp_path / "site"
    duplicate = """
    import torch
    from benchsuite import hookimpl
    from benchsuite.records import Hyperparameter, OptimizerSpec

    @hookimpl
    def benchsuite_optimizers():
        return [OptimizerSpec(name="sgd", factory=torch.optim.SGD,
                              hyperparameters={"lr": Hyperparameter(float, 0.1, low=0.0)}, elementwise=True)]
    """
    install_distribution(site, "benchsuite-mysgd", "benchsuite_mysgd", duplicate, "mysgd")
    listed = cli_here("plugins", "--json", site=site, monkeypatch=monkeypatch)
    assert listed.returncode == 0, listed.stderr
    plugins = {p["name"]: p for p in json.loads(listed.stdout)}
    assert plugins["mysgd"]["clashes"] == ["optimizer sgd"]
    assert plugins["builtin-optimizers"]["clashes"] == ["optimizer sgd"]
    human = cli_here("plugins", site=site, monkeypatch=monkeypatch)
    assert human.returncode == 0 and "clash" in human.stdout
    # a suite that uses the clashing name stops with one line naming both providers
    suite = tmp_path / "suite.yaml"
    suite.write_text("tasks: [{dataset: digits, classes: [[0, 1]], n_train: [4]}]\n"
                     "architectures: [{name: mlp}]\noptimizers: [sgd]\nbaselines: [gnc]\n")
    used = cli_here("validate", str(suite), site=site, monkeypatch=monkeypatch)
    assert used.returncode == 2
    assert "builtin-optimizers" in used.stderr and "mysgd" in used.stderr and "'sgd'" in used.stderr
    assert "Traceback" not in used.stderr


def test_disable_variable_resolves_a_conflict(tmp_path, monkeypatch):
    site = tmp_path / "site"
    install_distribution(site, "benchsuite-halfprior", "benchsuite_halfprior", PRIOR_PLUGIN, "halfprior")
    monkeypatch.setenv("BENCHSUITE_DISABLE_PLUGINS", "halfprior")
    listed = {p["name"]: p for p in json.loads(cli("plugins", "--json", site=site, check=True).stdout)}
    assert listed["halfprior"]["status"] == "disabled"


def test_duplicate_in_process_names_both():
    from benchsuite import hookimpl
    from benchsuite.records import PriorSpec

    mine = types.ModuleType("mine")
    mine.benchsuite_priors = hookimpl(lambda: [PriorSpec(name="uniform", family="uniform", scale=lambda f: 1.0)])
    registry = load_registry(include_entry_points=False, extra=[("mine", mine)])
    assert "prior uniform" in next(p for p in registry.plugins if p.name == "mine").clashes
    with pytest.raises(PluginError, match=r"builtin-priors .* and mine"):
        registry.prior("uniform")
    assert registry.prior("kaiming-uniform").name == "kaiming-uniform"  # the rest still usable


def test_unknown_name_lists_closest():
    registry = load_registry(include_entry_points=False)
    with pytest.raises(PluginError, match=r"did you mean 'adam'"):
        registry.optimizer("adma")


def test_a_reporter_plugin_prints_and_writes_its_format(tmp_path, monkeypatch):
    """Through an installed plugin: `leaderboard --format tsv` renders with the plugin and writes
    leaderboard.tsv beside the built-in files."""
    from stored_results import make_results

    site = tmp_path / "site"
    reporter = """
    from benchsuite import hookimpl
    from benchsuite.records import ReporterSpec

    def render(rows, title="Leaderboard", figures=None):
        return "\\n".join(["method\\tN\\tgain"] + [f"{r['optimizer']}\\t{r['n_train']}\\t{r.get('gain')}" for r in rows]) + "\\n"

    @hookimpl
    def benchsuite_reporters():
        return [ReporterSpec(name="tsv", suffix="tsv", render=render)]
    """
    install_distribution(site, "benchsuite-tsv", "benchsuite_tsv", reporter, "tsv")
    out = tmp_path / "results"
    make_results(out)
    result = cli_here("leaderboard", str(out), "--format", "tsv", site=site, monkeypatch=monkeypatch)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("method\tN\tgain\n") and "sgd\t4\t" in result.stdout
    assert (out / "leaderboard.tsv").read_text() == result.stdout
    assert (out / "leaderboard.md").exists()
    unknown = cli_here("leaderboard", str(out), "--format", "tvs", site=site, monkeypatch=monkeypatch)
    assert unknown.returncode == 2 and "unknown reporter 'tvs'" in unknown.stderr and "tsv" in unknown.stderr


def set_version(site: Path, name: str, old: str, new: str) -> None:
    """What `pip install` of a new release leaves: the same module, a dist-info of the new version."""
    info = site / f"{name.replace('-', '_')}-{old}.dist-info"
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {new}\n")
    info.rename(site / f"{name.replace('-', '_')}-{new}.dist-info")


def test_resuming_with_another_plugin_version_stops_and_restart_keeps_the_old_database(tmp_path, monkeypatch):
    """The issue's case: a plugin fixed and bumped, the same folder rerun. Its finished cells came
    from the old version, so the run stops in one line; --restart keeps the old database beside."""
    import sqlite3

    site = tmp_path / "site"
    plugin = """
    import torch
    from benchsuite import hookimpl
    from benchsuite.records import Hyperparameter, OptimizerSpec

    @hookimpl
    def benchsuite_optimizers():
        return [OptimizerSpec(name="mysgd", factory=torch.optim.SGD, elementwise=True,
                              hyperparameters={"lr": Hyperparameter(float, 0.1, low=0.0)})]
    """
    install_distribution(site, "benchsuite-mysgd", "benchsuite_mysgd", plugin, "mysgd")
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "name: bump\nmodels_per_cell: 2\n"
        "tasks: [{dataset: digits, classes: [[0, 1]], n_train: [4], training_set_seeds: [200]}]\n"
        "architectures: [{name: mlp, widths: ['1/6']}]\noptimizers: [{name: mysgd, epochs: 5}]\n"
    )
    out = tmp_path / "out"
    first = cli_here("run", str(suite), "--out", str(out), "--quiet", site=site, monkeypatch=monkeypatch)
    assert first.returncode == 0, first.stderr
    database = out / "results.sqlite"
    with sqlite3.connect(database) as db:
        (recorded,) = db.execute("SELECT plugins FROM cells").fetchone()
    assert json.loads(recorded)["optimizer mysgd"] == "benchsuite-mysgd 1.2.3"
    before = database.read_bytes()

    set_version(site, "benchsuite-mysgd", "1.2.3", "1.3.0")
    stopped = cli_here("run", str(suite), "--out", str(out), "--quiet", site=site, monkeypatch=monkeypatch)
    assert stopped.returncode == 2
    assert "optimizer mysgd: benchsuite-mysgd 1.2.3 then, benchsuite-mysgd 1.3.0 now" in stopped.stderr
    assert stopped.stderr.splitlines() == [
        next(line for line in stopped.stderr.splitlines() if line.startswith("error:"))
    ]  # one line, no traceback
    assert database.read_bytes() == before  # nothing written

    restarted = cli_here("run", str(suite), "--out", str(out), "--quiet", "--restart", site=site, monkeypatch=monkeypatch)
    assert restarted.returncode == 0, restarted.stderr
    (kept,) = out.glob("results.superseded-*.sqlite")
    assert kept.read_bytes() == before
    with sqlite3.connect(database) as db:
        (recorded,) = db.execute("SELECT plugins FROM cells").fetchone()
    assert json.loads(recorded)["optimizer mysgd"] == "benchsuite-mysgd 1.3.0"
