"""The conformance kit (benchsuite.testing, `benchsuite check-plugin`) catches what it promises to.

Each broken plugin here is a real optimizer or sampler with one real defect; the kit must fail it
with a report that says what is wrong, and pass the built-ins.
"""

from __future__ import annotations

import types

import pytest
import torch
from cli_runner import cli

from benchsuite import hookimpl
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


@pytest.mark.parametrize("name", ["adam", "gnc", "uniform", "mlp"])
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
    ok = cli("check-plugin", "sgd")  # through the CLI: the report, and sgd's checks
    assert ok.returncode == 0, ok.stderr
    assert "optimizer sgd" in ok.stdout and "PASS" in ok.stdout and "FAIL" not in ok.stdout
    unknown = cli("check-plugin", "sdg")
    assert unknown.returncode == 2 and "did you mean 'sgd'" in unknown.stderr


def test_a_metric_that_mixes_networks_is_caught_and_an_honest_one_runs_in_a_suite(tmp_path):
    """Through a real plugin: the kit fails a metric normalized over the whole stack, and the
    runner computes an honest plugin metric and stores it per network."""
    from benchsuite.records import MetricSpec
    from benchsuite.runner import run_suite
    from benchsuite.store import Store
    from benchsuite.suite import validate_suite

    def norm(data):
        return torch.stack([v.detach().double().flatten(1).norm(dim=1) for v in data.parameters.values()]).sum(0)

    def mixed(data):
        values = norm(data)
        return values / values.mean()  # depends on the other networks of the stack

    module = types.ModuleType("metrics")
    module.benchsuite_metrics = hookimpl(lambda: [MetricSpec(name="norm-sum", compute=norm), MetricSpec(name="mixed", compute=mixed)])
    registry = load_registry(include_entry_points=False, extra=[("metrics", module)])
    assert [c.name for c in failed(check("mixed", registry=registry))] == ["one value per network, equal to each network alone"]
    assert_conforms("norm-sum", registry=registry)

    suite = validate_suite({
        "models_per_cell": 3,
        "tasks": [{"dataset": "digits", "classes": [[0, 1]], "n_train": [4], "training_set_seeds": [200]}],
        "architectures": [{"name": "mlp", "widths": ["1/6"]}],
        "optimizers": [{"name": "sgd", "epochs": 3}], "baselines": ["gnc"], "metrics": ["norm-sum"],
    }, registry, "s.yaml")  # fmt: skip
    run_suite(suite, tmp_path, registry=registry)
    with Store(tmp_path / "results.sqlite", read_only=True) as store:
        rows = store.connection.execute("SELECT metric, COUNT(*), MIN(value) FROM network_metrics GROUP BY metric").fetchall()
        networks = store.connection.execute("SELECT COUNT(*) FROM networks").fetchone()[0]
    assert networks >= 4 and [tuple(r) for r in rows] == [("norm-sum", networks, rows[0][2])] and rows[0][2] > 0


def test_an_executor_plugin_runs_the_units_and_the_store_is_the_same(tmp_path):
    """Through a real plugin: an executor that runs the units last to first gives the same rows
    as the built-in local one; only the host writes the store."""
    from benchsuite.records import ExecutorSpec
    from benchsuite.runner import run_suite
    from benchsuite.store import Store
    from benchsuite.suite import validate_suite

    seen = []

    def backwards(plan):
        seen.append([len(unit) for unit in plan.units])
        for unit in reversed(plan.units):
            yield from plan.run_unit(unit)

    module = types.ModuleType("executors")
    module.benchsuite_executors = hookimpl(lambda: [ExecutorSpec(name="backwards", execute=backwards)])
    registry = load_registry(include_entry_points=False, extra=[("executors", module)])
    suite = validate_suite({
        "models_per_cell": 2,
        "tasks": [{"dataset": "digits", "classes": [[0, 1], [3, 8]], "n_train": [4], "training_set_seeds": [200]}],
        "architectures": [{"name": "mlp", "widths": ["1/6"]}],
        "optimizers": [{"name": "sgd", "epochs": 3}], "baselines": ["gnc"],
    }, registry, "s.yaml")  # fmt: skip

    def rows(folder):
        with Store(folder / "results.sqlite", read_only=True) as store:
            return sorted(
                tuple(r) for r in store.connection.execute(
                    "SELECT c.cell_id, n.model_index, n.found_at, n.train_acc, n.test_acc "
                    "FROM networks n JOIN cells c USING (cell_id)"
                )
            )  # fmt: skip

    run_suite(suite, tmp_path / "local", registry=registry)
    run_suite(suite, tmp_path / "backwards", registry=registry, executor="backwards")
    assert seen == [[2, 1, 1]]  # the two sgd cells share a stack: one unit
    assert rows(tmp_path / "local") == rows(tmp_path / "backwards") and rows(tmp_path / "local")


def test_a_dataset_and_an_architecture_from_a_plugin_run_in_a_suite(tmp_path):
    """Through a real plugin: a synthetic dataset and a one-layer architecture conform, and a
    suite on them runs, every stored network fitting its training set."""
    from torch import nn

    from benchsuite.records import ArchitectureSpec, DatasetSpec, ImageSplits
    from benchsuite.runner import run_suite
    from benchsuite.store import Store
    from benchsuite.suite import validate_suite

    def stripes(options):
        def split(per_class, seed):
            generator = torch.Generator().manual_seed(seed)
            labels = torch.arange(4).repeat_interleave(per_class)
            images = (labels.view(-1, 1, 1, 1) == torch.arange(4).view(1, 1, 4, 1)).float().expand(-1, 1, 4, 4)
            return (images + 0.05 * torch.rand(len(labels), 1, 4, 4, generator=generator)).clamp(0, 1), labels

        return ImageSplits(*split(40, 1), *split(10, 2))

    def linear(input_shape, width=1, bias=False):
        return nn.Sequential(nn.Flatten(), nn.Linear(int(torch.tensor(input_shape).prod()), 2, bias=bias))

    module = types.ModuleType("shapes")
    module.benchsuite_datasets = hookimpl(lambda: [DatasetSpec(
        name="stripes", load=stripes, num_classes=4, holdout_per_class=8, input_shape=(1, 4, 4))])
    module.benchsuite_architectures = hookimpl(lambda: [ArchitectureSpec(name="linear", build=linear)])
    registry = load_registry(include_entry_points=False, extra=[("shapes", module)])
    assert_conforms("stripes", registry=registry)
    assert_conforms("linear", registry=registry)
    suite = validate_suite({
        "models_per_cell": 2,
        "tasks": [{"dataset": "stripes", "classes": [[0, 3]], "n_train": [4], "training_set_seeds": [200]}],
        "architectures": [{"name": "linear"}],
        "optimizers": [{"name": "sgd", "epochs": 20, "lr": 0.5}], "baselines": ["gnc"],
    }, registry, "s.yaml")  # fmt: skip
    run_suite(suite, tmp_path, registry=registry)
    with Store(tmp_path / "results.sqlite", read_only=True) as store:
        stored = store.connection.execute("SELECT COUNT(*), MIN(train_acc) FROM networks").fetchone()
    assert stored[0] == 4 and stored[1] == 1.0


def test_the_issues_third_party_optimizers_as_a_newcomer_writes_them():
    """The plugin API issue's cases, wrapped from real packages as docs/writing-plugins.md says:
    pytorch-optimizer's SAM (owns its step: uses the closure) and schedulefree's AdamW (train and
    eval modes) conform; Prodigy declared elementwise is caught (declared honestly it runs on the
    per-network path, which test_the_same_optimizer_declared_honestly_conforms checks)."""
    pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
    schedulefree = pytest.importorskip("schedulefree")

    def sam(params, lr, rho):
        return pytorch_optimizer.SAM(params, torch.optim.SGD, rho=rho, lr=lr)

    lr = Hyperparameter(float, 0.05, low=0.0)
    specs = [
        OptimizerSpec(name="po-sam", factory=sam, uses_closure=True,
                      hyperparameters={"lr": lr, "rho": Hyperparameter(float, 0.05, low=0.0)}),
        OptimizerSpec(name="sf-adamw", factory=schedulefree.AdamWScheduleFree, elementwise=True,
                      hyperparameters={"lr": Hyperparameter(float, 0.01, low=0.0)}),
        OptimizerSpec(name="prodigy-wrong", factory=pytorch_optimizer.Prodigy, elementwise=True,
                      hyperparameters={"lr": Hyperparameter(float, 1.0, low=0.0)}),
    ]  # fmt: skip
    registry = registry_with(*specs)
    for name in ("po-sam", "sf-adamw"):
        assert_conforms(name, registry=registry)
    problems = failed(check("prodigy-wrong", registry=registry))
    assert problems and "declared elementwise=True" in problems[0].detail
