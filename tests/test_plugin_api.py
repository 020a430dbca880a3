"""The plugin boundary as a plugin author meets it: declared settings, checked records, hook names.

Plugins here are real module objects registered through the same loader as installed ones (the
entry-point path is covered in test_plugins.py).
"""

from __future__ import annotations

import math
import subprocess
import sys
import types
from importlib import resources

import pytest

from benchsuite import hookimpl
from benchsuite.plugins import load_registry
from benchsuite.records import Hyperparameter, OptimizerSpec, PriorSpec, SamplerSpec, Search
from benchsuite.suite import validate_suite


def plugin(name: str, **hooks) -> tuple[str, types.ModuleType]:
    module = types.ModuleType(name)
    for hook, function in hooks.items():
        setattr(module, hook, function)
    return name, module


def loaded(*plugins):
    with pytest.warns(UserWarning) if any(p[0].startswith("bad") for p in plugins) else _nothing():
        registry = load_registry(include_entry_points=False, extra=plugins)
    return registry, {p.name: p for p in registry.plugins}


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def sgd_like(**hyperparameters) -> OptimizerSpec:
    import torch

    return OptimizerSpec(name="mysgd", factory=torch.optim.SGD, hyperparameters=hyperparameters, elementwise=True)


SUITE = {
    "tasks": [{"dataset": "digits", "classes": [[0, 1]], "n_train": [4]}],
    "architectures": [{"name": "mlp"}],
    "baselines": ["gnc"],
}


# ---------------------------------------------------------------------------------------------
# Declared hyperparameters


def test_a_float_declared_with_an_integer_default_takes_float_values():
    """The issue's case: {"lr": 1} once made `lr: 0.01` fail as "expected an integer"."""
    mine = plugin("mine", benchsuite_optimizers=hookimpl(lambda: [sgd_like(lr=Hyperparameter(float, 1, low=0.0))]))
    registry, _ = loaded(mine)
    for value, stored in ((0.01, 0.01), (1, 1.0)):
        suite = validate_suite({**SUITE, "optimizers": [{"name": "mysgd", "lr": value}]}, registry, "s.yaml")
        entry = suite.resolved["optimizers"][0]
        assert entry["hyperparameters"]["lr"] == stored and isinstance(entry["hyperparameters"]["lr"], float)


def test_a_bare_default_is_refused_naming_plugin_and_setting():
    mine = plugin("bad-bare", benchsuite_optimizers=hookimpl(lambda: [sgd_like(lr=0.01)]))
    _, plugins = loaded(mine)
    assert plugins["bad-bare"].status == "failed"
    assert "setting 'lr' must be declared as benchsuite.records.Hyperparameter" in plugins["bad-bare"].error


@pytest.mark.parametrize(
    ("declared", "value", "words"),
    [
        (Hyperparameter(float, 0.1, low=0.0), -1, "expected a finite number >= 0, got number -1"),
        (Hyperparameter(float, 0.1, low=0.0), math.nan, "finite number"),
        (Hyperparameter(float, 0.1, low=0.0), True, "got boolean true"),
        (Hyperparameter(float, 0.9, low=0.0, high=1.0, open_high=True), 1.0, "in [0, 1), got number 1.0"),
        (Hyperparameter(float, 0.5, low=0.0, high=1.0, open_low=True), 0.0, "in (0, 1]"),
        (Hyperparameter(int, 3, low=1), 2.5, "expected an integer >= 1, got number 2.5"),
        (Hyperparameter(int, 3, low=1), 2**63, "got number"),
        (Hyperparameter(int, "auto", low=1, words=("auto",)), "many", "an integer >= 1 or 'auto'"),
        (Hyperparameter(bool, False), "yes", "expected true or false, got string 'yes'"),
        (Hyperparameter(str, "a", choices=("a", "b")), "c", "one of 'a', 'b'"),
    ],
)
def test_declarations_refuse_what_they_do_not_allow(declared, value, words):
    with pytest.raises(ValueError) as error:
        declared.validate(value)
    assert words in str(error.value)


def test_declarations_keep_what_they_allow():
    assert Hyperparameter(int, "auto", low=1, words=("auto",)).validate(8) == 8
    assert Hyperparameter(int, "auto", low=1, words=("auto",)).validate("auto") == "auto"
    assert Hyperparameter(bool, "auto", words=("auto",)).validate(False) is False
    assert Hyperparameter(float, 0.9, low=0.0, high=1.0).validate(1) == 1.0


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda: Hyperparameter(list, []), "type must be one of"),
        (lambda: Hyperparameter(float, -1.0, low=0.0), "default -1.0 is not valid"),
        (lambda: Hyperparameter(float, 0.1, choices=("a",)), "choices are for str"),
        (lambda: Search(0.0, 1.0, "log"), "log-scale search needs low > 0"),
        (lambda: Search(1.0, 0.1), "low < high"),
        (lambda: Search(0.1, 1.0, "cubic"), "'log' or 'linear'"),
    ],
)
def test_a_wrong_declaration_fails_where_it_is_written(make, words):
    with pytest.raises((TypeError, ValueError), match=words.replace("(", r"\(")):
        make()


def test_a_suite_value_is_checked_against_the_declaration_with_file_and_key():
    registry = load_registry(include_entry_points=False)
    from benchsuite.errors import SuiteError

    with pytest.raises(SuiteError) as error:
        validate_suite({**SUITE, "optimizers": [{"name": "adam", "beta2": 1.0}]}, registry, "s.yaml")
    assert str(error.value) == "s.yaml: optimizers[0].beta2: expected a finite number in [0, 1), got number 1.0"


def test_builtin_sampler_declarations_match_the_engines_defaults():
    """Declared in the plugin module (no torch to list plugins), used by the engines: one truth."""
    from benchsuite.builtins import samplers
    from benchsuite.engine import gnc, subset

    registry = load_registry(include_entry_points=False)
    assert registry.sampler("gnc").defaults == gnc.DEFAULTS
    assert registry.sampler("gnc").performance_options == gnc.PERFORMANCE_OPTIONS
    assert registry.sampler("subset-mcmc").defaults == subset.DEFAULTS
    assert samplers.SUBSET_MCMC_PERFORMANCE_OPTIONS == subset.PERFORMANCE_OPTIONS


# ---------------------------------------------------------------------------------------------
# Checked registration


def test_a_misspelled_hook_is_an_error_naming_the_closest_hook():
    mine = plugin("bad-spelling", benchsuite_optimisers=hookimpl(lambda: [sgd_like()]))
    _, plugins = loaded(mine)
    assert plugins["bad-spelling"].status == "failed"
    assert "unknown hook 'benchsuite_optimisers'" in plugins["bad-spelling"].error
    assert "did you mean 'benchsuite_optimizers'" in plugins["bad-spelling"].error


def test_a_hook_without_hookimpl_is_an_error():
    mine = plugin("bad-unmarked", benchsuite_optimizers=lambda: [sgd_like()])
    _, plugins = loaded(mine)
    assert "not marked with @benchsuite.hookimpl" in plugins["bad-unmarked"].error


@pytest.mark.parametrize(
    ("returned", "words"),
    [
        (lambda: [PriorSpec(name="p", family="uniform", scale=lambda f: 1.0)], "returned a PriorSpec; it must return benchsuite.records.OptimizerSpec"),
        (lambda: sgd_like(), "must return a list of OptimizerSpec, got OptimizerSpec"),
        (lambda: [OptimizerSpec(name="my sgd", factory=lambda p: None)], "name 'my sgd' must be 1-64"),
    ],
)
def test_a_wrong_record_is_refused_naming_plugin_and_hook(returned, words):
    mine = plugin("bad-record", benchsuite_optimizers=hookimpl(returned))
    registry, plugins = loaded(mine)
    assert plugins["bad-record"].status == "failed"
    assert "benchsuite_optimizers" in plugins["bad-record"].error and words in plugins["bad-record"].error
    assert plugins["bad-record"].provides == {}
    assert "my sgd" not in registry.names("optimizer")


def test_a_failing_plugin_contributes_nothing_even_from_its_good_hooks():
    def broken():
        raise RuntimeError("no GPU here")

    good_prior = hookimpl(lambda: [PriorSpec(name="half", family="uniform", scale=lambda f: 0.5)])
    mine = plugin("bad-half", benchsuite_priors=good_prior, benchsuite_optimizers=hookimpl(broken))
    registry, plugins = loaded(mine)
    assert "RuntimeError: no GPU here" in plugins["bad-half"].error
    assert "half" not in registry.names("prior")
    assert "sgd" in registry.names("optimizer")  # the rest loads


def test_records_take_keywords_only():
    with pytest.raises(TypeError):
        PriorSpec("uniform", "uniform", lambda f: 1.0)  # noqa: the point of the test
    with pytest.raises(TypeError):
        SamplerSpec("x", lambda request: None)


def test_an_implementation_asking_for_arguments_the_hook_does_not_give_is_refused():
    """pluggy checks implementations against the hookspecs, so specs can grow keyword arguments
    and an implementation asks for the ones it needs; one it cannot get is an error at load."""
    mine = plugin("bad-args", benchsuite_optimizers=hookimpl(lambda device: [sgd_like()]))
    _, plugins = loaded(mine)
    assert plugins["bad-args"].status == "failed" and "device" in plugins["bad-args"].error


def test_trace_variable_traces_hook_calls_on_stderr():
    code = "from benchsuite.plugins import load_registry; load_registry(include_entry_points=False)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
        env={**__import__("os").environ, "BENCHSUITE_TRACE_HOOKS": "1"}, check=False)
    assert result.returncode == 0, result.stderr
    assert "benchsuite_optimizers" in result.stderr and "finish" in result.stderr


def test_the_package_ships_py_typed():
    assert resources.files("benchsuite").joinpath("py.typed").is_file()


def test_plugins_name_shows_the_declared_settings():
    from cli_runner import cli

    result = cli("plugins", "adam")
    assert result.returncode == 0, result.stderr
    assert "beta2: float, a finite number in [0, 1); default 0.999" in result.stdout
    assert "elementwise update: yes" in result.stdout
    unknown = cli("plugins", "adma")
    # installed plugins add names (benchsuite-zoo: adan, radam), so adam is among the suggestions
    assert unknown.returncode == 2 and "did you mean" in unknown.stderr and "'adam'" in unknown.stderr
