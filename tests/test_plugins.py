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


PRIOR_PLUGIN = """
from benchsuite import hookimpl
from benchsuite.records import PriorSpec

@hookimpl
def benchsuite_priors():
    return [PriorSpec("uniform-0.5", "uniform", lambda fan_in: 0.5, "U[-0.5, 0.5]")]
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


def test_duplicate_name_is_an_error_naming_both(tmp_path):
    site = tmp_path / "site"
    duplicate = """
    import torch
    from benchsuite import hookimpl
    from benchsuite.records import OptimizerSpec

    @hookimpl
    def benchsuite_optimizers():
        return [OptimizerSpec("sgd", torch.optim.SGD, {"lr": 0.1}, elementwise=True)]
    """
    install_distribution(site, "benchsuite-mysgd", "benchsuite_mysgd", duplicate, "mysgd")
    result = cli("plugins", site=site)
    assert result.returncode == 2
    assert "builtin-optimizers" in result.stderr and "mysgd" in result.stderr and "'sgd'" in result.stderr
    assert "Traceback" not in result.stderr


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
    mine.benchsuite_priors = hookimpl(lambda: [PriorSpec("uniform", "uniform", lambda f: 1.0)])
    with pytest.raises(PluginError, match=r"'builtin-priors' and 'mine'"):
        load_registry(include_entry_points=False, extra=[("mine", mine)])


def test_unknown_name_lists_closest():
    registry = load_registry(include_entry_points=False)
    with pytest.raises(PluginError, match=r"did you mean 'adam'"):
        registry.optimizer("adma")
