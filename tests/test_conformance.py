"""The conformance kit (benchsuite.testing, `benchsuite check-plugin`) catches what it promises to.

Each broken plugin here is a real optimizer or sampler with one real defect; the kit must fail it
with a report that says what is wrong, and pass the built-ins.
"""

from __future__ import annotations

import types

import pytest
import torch
from click.testing import CliRunner

from benchsuite import hookimpl
from benchsuite.cli import main
from benchsuite.plugins import load_registry
from benchsuite.records import Hyperparameter, OptimizerSpec, Population, SamplerSpec
from benchsuite.testing import assert_conforms, check


class NormalizedGradientDescent(torch.optim.Optimizer):
    """Steps along g / ||g||: the norm spans the whole tensor, so stacked networks are coupled."""

    def __init__(self, params, lr=0.05):
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad / (p.grad.norm() + 1e-12), alpha=-group["lr"])


class NoisySGD(torch.optim.SGD):
    """Adds noise from the global torch generator: two runs with one seed differ."""

    @torch.no_grad()
    def step(self, closure=None):
        super().step()
        for group in self.param_groups:
            for p in group["params"]:
                p.add_(torch.randn_like(p), alpha=1e-3)


def registry_with(*records):
    module = types.ModuleType("mine")
    optimizers = [r for r in records if isinstance(r, OptimizerSpec)]
    samplers = [r for r in records if isinstance(r, SamplerSpec)]
    if optimizers:
        module.benchsuite_optimizers = hookimpl(lambda: optimizers)
    if samplers:
        module.benchsuite_samplers = hookimpl(lambda: samplers)
    return load_registry(include_entry_points=False, extra=[("mine", module)])


LR = {"lr": Hyperparameter(float, 0.05, low=0.0)}


def failed(reports):
    return [c for r in reports for c in r.checks if not c.passed and not c.skipped]


@pytest.mark.parametrize("name", ["sgd", "adam", "gnc", "uniform", "mlp"])
def test_the_builtins_conform(name):
    assert_conforms(name, registry=load_registry(include_entry_points=False))


def test_a_false_elementwise_promise_is_caught():
    spec = OptimizerSpec(name="ngd", factory=NormalizedGradientDescent, hyperparameters=LR, elementwise=True)
    problems = failed(check("ngd", registry=registry_with(spec)))
    assert problems and all("contract loop" in c.name for c in problems)
    assert "declared elementwise=True" in problems[0].detail


def test_the_same_optimizer_declared_honestly_conforms():
    spec = OptimizerSpec(name="ngd", factory=NormalizedGradientDescent, hyperparameters=LR, elementwise=False)
    assert_conforms("ngd", registry=registry_with(spec))


def test_an_unseeded_optimizer_is_caught():
    spec = OptimizerSpec(name="noisy", factory=NoisySGD, hyperparameters=LR, elementwise=True)
    names = {c.name for c in failed(check("noisy", registry=registry_with(spec)))}
    assert "seeded runs repeat (mlp)" in names


def test_a_factory_that_refuses_its_own_defaults_is_caught():
    def factory(params, lr):
        raise ValueError("lr must be set by hand")

    spec = OptimizerSpec(name="picky", factory=factory, hyperparameters=LR)
    (problem,) = failed(check("picky", registry=registry_with(spec)))
    assert problem.name == "settings validate" and "lr must be set by hand" in problem.detail


def test_a_sampler_whose_networks_do_not_fit_is_caught():
    def sample(request):
        """Returns prior draws without checking them: most do not fit."""
        parameters = {n: torch.randn(request.target, *p.shape, generator=torch.Generator().manual_seed(request.seed))
                      for n, p in request.module.named_parameters()}
        return Population(parameters=parameters, buffers={}, found_at=torch.arange(request.target),
                          candidates_tried=request.target, seconds=0.0)

    spec = SamplerSpec(name="liar", sample=sample)
    names = {c.name for c in failed(check("liar", registry=registry_with(spec)))}
    assert names == {"networks fit the training set"}


def test_check_plugin_command_reports_and_exits_nonzero_on_failure():
    ok = CliRunner().invoke(main, ["check-plugin", "sgd"])
    assert ok.exit_code == 0, ok.output
    assert "optimizer sgd" in ok.output and "PASS" in ok.output
    unknown = CliRunner().invoke(main, ["check-plugin", "sdg"])
    assert unknown.exit_code == 2 and "did you mean 'sgd'" in unknown.output
