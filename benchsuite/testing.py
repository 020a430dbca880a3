"""Conformance checks for plugins, importable from a plugin's own tests.

A plugin author writes one test, and `benchsuite check-plugin NAME` runs the same checks:

    from benchsuite.testing import assert_conforms

    def test_lion_conforms():
        assert_conforms("lion")

Each record is checked on a tiny task in seconds, against what the host relies on: settings that
validate, seeded runs that repeat, an optimizer trained by the host equal to the same optimizer
in the plain loop of the documented contract (so a declared `elementwise=True` is verified, not
trusted), a sampler's networks that really fit, a metric whose vectorized value equals each
network computed alone, an architecture with two logits, a prior that draws finite numbers, a
dataset whose splits have the declared shape.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Stacked and one-by-one training sum in different orders: a network trained in a stack may differ
# from the same network trained alone by rounding, never by more than this.
ATOL, RTOL = 1e-5, 1e-4
INPUT_SHAPE = (1, 8, 8)
N_TRAIN, NETWORKS, EPOCHS, BATCH = 8, 3, 3, 2


@dataclass(frozen=True)
class Check:
    """One property of one record: did it hold, and what was measured."""

    name: str
    passed: bool
    detail: str = ""
    skipped: bool = False


@dataclass
class Report:
    """Every check of one record, readable as text."""

    kind: str
    name: str
    provider: str
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(check.passed or check.skipped for check in self.checks)

    def render(self) -> str:
        lines = [f"{self.kind} {self.name} ({self.provider}): {'PASS' if self.passed else 'FAIL'}"]
        for check in self.checks:
            mark = "skip" if check.skipped else ("ok  " if check.passed else "FAIL")
            lines.append(f"  [{mark}] {check.name}" + (f": {check.detail}" if check.detail else ""))
        return "\n".join(lines)


def check(name: str, kind: str | None = None, registry=None) -> list[Report]:
    """Check every record called `name` (of `kind`, if given) that the installed plugins provide."""
    from benchsuite.plugins import default_registry

    registry = registry or default_registry()
    kinds = [kind] if kind else registry.kinds_of(name)
    registry.get(kinds[0], name)  # one line if `name` is not a record of that kind
    reports = []
    for k in kinds:
        record = registry.get(k, name)
        provider = registry.provider(k, name)
        report = Report(k, name, f"{provider.name}, {provider.distribution} {provider.version}".strip())
        report.checks = CHECKERS[k](record, registry)
        reports.append(report)
    return reports


def assert_conforms(name: str, kind: str | None = None, registry=None) -> None:
    """For a plugin's own tests: raise AssertionError with the readable report unless all pass."""
    reports = check(name, kind, registry)
    if not all(report.passed for report in reports):
        raise AssertionError("\n".join(report.render() for report in reports))


def _guarded(name: str, run: Callable[[], Check]) -> Check:
    """A check that raises has failed, with the error as its detail."""
    try:
        return run()
    except Exception as error:  # noqa: BLE001 - the report names what the plugin raised
        return Check(name, False, f"raised {type(error).__name__}: {error}")


# ---------------------------------------------------------------------------------------------
# The tiny task


def _data(n: int = N_TRAIN):
    """Separable 8x8 images (class 1 bright, class 0 dark), so every optimizer can fit them."""
    import torch

    generator = torch.Generator().manual_seed(1)
    labels = torch.arange(n) % 2
    images = 0.3 * torch.randn(n, *INPUT_SHAPE, generator=generator)
    return images + (2.0 * labels - 1).view(n, 1, 1, 1), labels


def _modules(bias: bool = True):
    """A plain MLP and a small conv net (the hand-written "mlp" and "conv" stacked paths)."""
    from torch import nn

    mlp = nn.Sequential(
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16, 12, bias=bias), nn.ReLU(),
        nn.Linear(12, 6, bias=bias), nn.ReLU(), nn.Linear(6, 2, bias=bias),
    )
    conv = nn.Sequential(nn.Conv2d(1, 3, 3, bias=bias), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 6 * 6, 2, bias=bias))
    return {"mlp": mlp, "conv": conv}


# ---------------------------------------------------------------------------------------------
# Optimizers


def contract_loop(module, parameters: dict, k: int, x, y, orders, batch_size: int, spec, hyperparameters: dict):
    """Network k trained the way docs/optimizer-contract.md says the host calls an optimizer, on
    one plain module: `train()` if the optimizer has it; per batch, the gradient of the batch's
    mean cross-entropy, then `step(closure)` (when the optimizer uses or requires the closure)
    or `step()`; `eval()` at the end if it has it. Written apart from the host, as a reference."""
    import inspect

    import torch
    import torch.nn.functional as F

    network = copy.deepcopy(module).train()
    with torch.no_grad():
        for name, value in network.named_parameters():
            value.copy_(parameters[name][k])
    optimizer = spec.factory(list(network.parameters()), **hyperparameters)
    closure_parameter = inspect.signature(optimizer.step).parameters.get("closure")
    needs_closure = spec.uses_closure or (
        closure_parameter is not None and closure_parameter.default is inspect.Parameter.empty
    )
    if callable(getattr(optimizer, "train", None)):
        optimizer.train()
    for epoch_order in orders[k]:
        for start in range(0, len(epoch_order), batch_size):
            indices = epoch_order[start : start + batch_size]

            def closure(indices=indices):
                optimizer.zero_grad()
                loss = F.cross_entropy(network(x[indices]), y[indices])
                loss.backward()
                return loss

            optimizer.zero_grad()
            F.cross_entropy(network(x[indices]), y[indices]).backward()
            optimizer.step(closure) if needs_closure else optimizer.step()
    if callable(getattr(optimizer, "eval", None)):
        optimizer.eval()
    return {name: value.detach().clone() for name, value in network.named_parameters()}


def _trained_alone(module, parameters, buffers, k, x, y, orders, spec, hyperparameters, seeds):
    """Network k trained by the host in a stack of one: the reference for a stack-aware optimizer,
    which steps tensors with a leading network axis and so has no plain single-module form."""
    from benchsuite.engine.training import train_networks

    one = {n: v[k : k + 1] for n, v in parameters.items()}
    alone = {n: v[k : k + 1] for n, v in buffers.items()}
    trained, _ = train_networks(module, x, y, spec, hyperparameters, one, alone, orders[k : k + 1], BATCH, seeds=seeds[k : k + 1])
    return {n: v[0] for n, v in trained.items()}


def _check_optimizer(spec, registry) -> list[Check]:
    import torch

    from benchsuite.engine.batches import optimizer_seed, round_orders
    from benchsuite.engine.training import choose_path, initial_parameters, train_networks
    from benchsuite.records import PriorSpec, kaiming_uniform_bound

    checks = [_guarded("settings validate", lambda: _settings_validate(spec))]
    if not checks[0].passed:
        return checks
    hyperparameters = dict(spec.defaults)
    prior = PriorSpec(name="kaiming-uniform", family="uniform", scale=kaiming_uniform_bound)
    x, y = _data()
    title = ("a network trained in a stack equals it trained alone" if spec.stacked
             else "host training equals the plain contract loop")  # fmt: skip
    for label, module in _modules().items():
        parameters, buffers = initial_parameters(module, prior, 7, range(NETWORKS), "cpu")
        orders = round_orders(7, range(NETWORKS), N_TRAIN, EPOCHS, "independent")

        seeds = [optimizer_seed(7, a) for a in range(NETWORKS)]

        runs: list[dict] = []  # the first run is also the one compared with the plain loop

        def train(module=module, parameters=parameters, buffers=buffers, orders=orders, runs=runs, seeds=seeds):
            runs.append(train_networks(module, x, y, spec, hyperparameters, parameters, buffers, orders, BATCH, seeds=seeds)[0])
            return runs[-1]

        def repeats(train=train, label=label):
            first, second = train(), train()
            same = all(torch.equal(first[n], second[n]) for n in first)
            finite = all(torch.isfinite(v).all() for v in first.values())
            return Check(f"seeded runs repeat ({label})", same and finite,
                         "" if same and finite else ("results differ between two runs" if not same else "weights not finite"))

        def follows_contract(train=train, module=module, parameters=parameters, buffers=buffers, orders=orders, runs=runs, seeds=seeds, label=label):
            path = choose_path(module, spec)
            trained = runs[0] if runs else train()
            worst = 0.0
            for k in range(NETWORKS):
                if spec.stacked:
                    plain = _trained_alone(module, parameters, buffers, k, x, y, orders, spec, hyperparameters, seeds)
                else:
                    plain = contract_loop(module, parameters, k, x, y, orders, BATCH, spec, hyperparameters)
                for name, value in plain.items():
                    difference = (trained[name][k] - value).abs() - RTOL * value.abs()
                    worst = max(worst, float(difference.max()))
            passed = worst <= ATOL
            detail = f"path {path}, worst |host - plain| beyond rtol {RTOL:g}: {worst:.2e} (atol {ATOL:g})"
            if not passed and (spec.elementwise or spec.stacked):
                promise = "elementwise=True" if spec.elementwise else "stacked=True"
                detail += f"; declared {promise} but stacked training is not independent training"
            return Check(f"{title} ({label})", passed, detail)

        checks.append(_guarded(f"seeded runs repeat ({label})", repeats))
        checks.append(_guarded(f"{title} ({label})", follows_contract))
    return checks


def _settings_validate(spec) -> Check:
    import torch

    declared = spec.declared
    for setting in declared.values():
        setting.validate(setting.default)
    if spec.check is not None:
        spec.check(dict(spec.defaults))
    factory = getattr(spec, "factory", None)
    if factory is not None:
        from benchsuite.records import Networks

        extra = {"networks": Networks(count=1, seeds=(0,))} if spec.stacked else {}
        factory([torch.nn.Parameter(torch.zeros(1, 1))], **spec.defaults, **extra)
    return Check("settings validate", True, f"{len(declared)} declared: {', '.join(declared) or 'none'}")


# ---------------------------------------------------------------------------------------------
# Samplers


def _check_sampler(spec, registry) -> list[Check]:
    import torch

    from benchsuite.records import SamplingRequest
    from benchsuite.stacked import accuracy

    checks = [_guarded("settings validate", lambda: _settings_validate(spec))]
    if not checks[0].passed:
        return checks
    module = _modules(bias=False)["mlp"]  # samplers draw bias-free networks (protocol.md)
    x, y = _data(4)
    request = SamplingRequest(
        module=module, x_train=x, y_train=y, prior=registry.prior("uniform"), target=3,
        max_candidates=10**6, seed=11, device=torch.device("cpu"), options=dict(spec.defaults),
    )
    populations = []

    def fits():
        population = spec.sample(request)
        populations.append(population)
        if population.size == 0:
            return Check("networks fit the training set", False, "no network within 10^6 candidates")
        fit = accuracy(module, population.parameters, population.buffers, x, y)
        return Check("networks fit the training set", bool((fit == 1).all()),
                     f"{population.size} networks, training accuracy {fit.min().item():.3f}..{fit.max().item():.3f}")

    def repeats():
        if not populations:
            return Check("seeded runs repeat", False, "no first run to compare with")
        again = spec.sample(request)
        first = populations[0]
        same = torch.equal(first.found_at, again.found_at) and all(
            torch.equal(first.parameters[n], again.parameters[n]) for n in first.parameters
        )
        return Check("seeded runs repeat", same, "" if same else "same seed, different networks")

    checks.append(_guarded("networks fit the training set", fits))
    checks.append(_guarded("seeded runs repeat", repeats))
    return checks


# ---------------------------------------------------------------------------------------------
# Priors, architectures, datasets


def _check_prior(spec, registry) -> list[Check]:
    import torch

    def draws():
        if spec.family not in ("uniform", "normal"):
            return Check("draws finite weights", False, f"family {spec.family!r} is not uniform or normal")
        scales = {fan_in: float(spec.scale(fan_in)) for fan_in in (1, 16, 400)}
        bad = {f: s for f, s in scales.items() if not (math.isfinite(s) and s > 0)}
        if bad:
            return Check("draws finite weights", False, f"scale(fan_in) not a positive number: {bad}")
        tensor = spec.sample_(torch.empty(1000), 16, torch.Generator().manual_seed(0))
        finite = bool(torch.isfinite(tensor).all())
        return Check("draws finite weights", finite, f"scale at fan-in 1, 16, 400: {', '.join(f'{s:.3g}' for s in scales.values())}")

    return [_guarded("draws finite weights", draws)]


def _check_architecture(spec, registry) -> list[Check]:
    import torch

    shape = (1, 28, 28)

    def two_logits():
        module = spec.build(shape, width=spec.default_width, **({"depth": spec.default_depth} if spec.default_depth is not None else {}), bias=False)
        logits = module(torch.randn(3, *shape))
        passed = tuple(logits.shape) == (3, 2)
        return Check("maps [B, C, H, W] to [B, 2] logits", passed, f"{shape} -> {tuple(logits.shape)}")

    return [_guarded("maps [B, C, H, W] to [B, 2] logits", two_logits)]


def _check_dataset(spec, registry) -> list[Check]:
    from benchsuite.records import DataOptions

    def splits():
        try:
            data = spec.load(DataOptions())
        except Exception as error:  # noqa: BLE001 - data may simply not be on this machine
            return Check("splits have the declared shape", True, f"not loadable here: {error}", skipped=True)
        problems = []
        for split in ("train", "test"):
            images, labels = getattr(data, f"{split}_images"), getattr(data, f"{split}_labels")
            if images.ndim != 4 or len(images) != len(labels):
                problems.append(f"{split}: images {tuple(images.shape)}, {len(labels)} labels")
            elif spec.input_shape is not None and tuple(images.shape[1:]) != tuple(spec.input_shape):
                problems.append(f"{split}: images {tuple(images.shape[1:])}, declared {spec.input_shape}")
            if len(labels) and not (0 <= int(labels.min()) and int(labels.max()) < spec.num_classes):
                problems.append(f"{split}: labels outside 0..{spec.num_classes - 1}")
        if spec.class_names and len(spec.class_names) != spec.num_classes:
            problems.append(f"{len(spec.class_names)} class names for {spec.num_classes} classes")
        detail = "; ".join(problems) or f"train {tuple(data.train_images.shape)}, test {tuple(data.test_images.shape)}"
        return Check("splits have the declared shape", not problems, detail)

    return [_guarded("splits have the declared shape", splits)]


# ---------------------------------------------------------------------------------------------
# Metrics


def _check_metric(spec, registry) -> list[Check]:
    import torch

    from benchsuite.records import MetricInput
    from benchsuite.stacked import init_stacked

    x, y = _data(N_TRAIN)
    x_test, y_test = _data(2 * N_TRAIN)
    prior = registry.prior("kaiming-uniform")
    # an optimizer's MLP (biases, initial weights known) and a sampler's conv net (neither)
    cases = []
    for label, bias, role in (("mlp", True, "optimizer"), ("conv", False, "baseline")):
        module = _modules(bias=bias)[label].eval()
        parameters, buffers = init_stacked(module, prior, [3, 4, 5, 6], "cpu")
        initial = init_stacked(module, prior, [13, 14, 15, 16], "cpu")[0] if role == "optimizer" else None
        cases.append((module, parameters, buffers, initial, role))

    def on(case, keep=None):
        module, parameters, buffers, initial, role = case

        def pick(stacked):
            return None if stacked is None else {n: v[keep] for n, v in stacked.items()} if keep is not None else stacked

        return spec.compute(MetricInput(module=module, parameters=pick(parameters), buffers=pick(buffers), x_train=x,
                                        y_train=y, x_test=x_test, y_test=y_test, role=role,
                                        initial_parameters=pick(initial)))  # fmt: skip

    def vectorized():
        worst, close = 0.0, True
        for case in cases:
            values = on(case)
            if not isinstance(values, torch.Tensor) or tuple(values.shape) != (4,):
                shape = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
                return Check("one value per network, equal to each network alone", False, f"returned {shape} for 4 networks")
            alone = torch.cat([on(case, torch.tensor([k])).reshape(1) for k in range(4)]).to(values.dtype)
            close &= torch.allclose(values, alone, rtol=RTOL, atol=ATOL, equal_nan=True)
            worst = max(worst, float((values - alone).abs().nan_to_num(0).max()))
        return Check("one value per network, equal to each network alone", close,
                     f"worst |stacked - alone| {worst:.2e} (rtol {RTOL:g}, atol {ATOL:g})")

    def reordered():
        """A population metric: the networks in another order give the same values, reordered."""
        worst, close = 0.0, True
        order = torch.tensor([2, 0, 3, 1])
        for case in cases:
            values = on(case)
            if not isinstance(values, torch.Tensor) or tuple(values.shape) != (4,):
                shape = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
                return Check("one value per network, reordered with the networks", False, f"returned {shape} for 4 networks")
            permuted = on(case, order).to(values.dtype)
            close &= torch.allclose(values[order], permuted, rtol=RTOL, atol=ATOL, equal_nan=True)
            worst = max(worst, float((values[order] - permuted).abs().nan_to_num(0).max()))
        return Check("one value per network, reordered with the networks", close,
                     f"worst |reordered - recomputed| {worst:.2e} (population scope: the values may depend on the "
                     "other networks of the population)")

    def repeats():
        same = all(torch.equal(on(case).nan_to_num(-1), on(case).nan_to_num(-1)) for case in cases)
        return Check("repeats", same, "" if same else "two calls on the same networks differ")

    if spec.scope == "population":
        return [_guarded("one value per network, reordered with the networks", reordered), _guarded("repeats", repeats)]
    return [_guarded("one value per network, equal to each network alone", vectorized), _guarded("repeats", repeats)]


CHECKERS: dict[str, Callable[[Any, Any], list[Check]]] = {
    "metric": _check_metric,
    "optimizer": _check_optimizer,
    "sampler": _check_sampler,
    "prior": _check_prior,
    "architecture": _check_architecture,
    "dataset": _check_dataset,
}
