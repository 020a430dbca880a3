"""The "per_network_stacked" training path (engine/training.py, stacked_mlp.NetworkSteppers):
one optimizer per network, stepped on the gradients the stacked MLP or LeNet formulation computed
for the whole stack. What it must keep from "per_network": each network's numbers are its own (a
network in a stack equals it alone, bit for bit), the optimizer really moves the stacked weights
(the plain way's numbers in float64, to 1e-12), and an optimizer that fails on numbers loses only
that network."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from benchsuite.architectures.lenet import build_lenet
from benchsuite.architectures.resnet4 import build_resnet4
from benchsuite.engine.batches import round_orders
from benchsuite.engine.training import choose_path, initial_parameters, train_networks
from benchsuite.errors import OptimizerStepError
from benchsuite.records import Hyperparameter, OptimizerSpec, PriorSpec, kaiming_uniform_bound

KAIMING = PriorSpec(name="kaiming-uniform", family="uniform", scale=kaiming_uniform_bound)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


class LayerwiseTrust(torch.optim.Optimizer):
    """A LARS-like step: each tensor moves by lr * (1 + ||p||) / ||g|| * g, so a tensor's update
    depends on all its entries (one optimizer over a stack would mix the networks)."""

    def __init__(self, params, lr=0.05, fail_on_nan=False):
        super().__init__(params, {"lr": lr})
        self.fail_on_nan = fail_on_nan

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if self.fail_on_nan and not bool(torch.isfinite(p.grad).all()):
                    raise torch.linalg.LinAlgError("a NaN reached the trust ratio")
                trust = (1 + p.norm()) / (p.grad.norm() + 1e-12)
                p.add_(p.grad * trust, alpha=-group["lr"])


SPEC = OptimizerSpec(
    name="trust", factory=LayerwiseTrust,
    hyperparameters={"lr": Hyperparameter(float, 0.05), "fail_on_nan": Hyperparameter(bool, False)},
)  # fmt: skip


def mlp():
    return nn.Sequential(
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(196, 24), nn.ReLU(), nn.Linear(24, 12), nn.ReLU(),
        nn.Linear(12, 2),
    )  # fmt: skip


NETWORKS = {
    "mlp": mlp,
    "lenet": lambda: build_lenet((1, 28, 28), "1/6", bias=True),
}


def setup(make, count=4, epochs=2, n=8, dtype=torch.float32):
    module = make().to(dtype)
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(n, 1, 28, 28, generator=generator, dtype=dtype)
    y = torch.arange(n) % 2
    parameters, buffers = initial_parameters(module, KAIMING, 9, range(count), "cpu")
    parameters = {name: value.to(dtype) for name, value in parameters.items()}
    orders = round_orders(9, range(count), n, epochs, "independent")
    return module, x, y, parameters, buffers, orders


def train(module, x, y, parameters, buffers, orders, path, **hyperparameters):
    options = {"lr": 0.05, "fail_on_nan": False, **hyperparameters}
    return train_networks(module, x, y, SPEC, options, parameters, buffers, orders, 2, path=path)[0]


def test_coupled_optimizers_take_it_where_a_stacked_formulation_exists():
    closure = OptimizerSpec(name="c", factory=LayerwiseTrust, uses_closure=True)
    for make in NETWORKS.values():
        assert choose_path(make(), SPEC) == "per_network_stacked"
        assert choose_path(make(), closure) == "per_network"
    assert choose_path(build_resnet4((1, 28, 28), "1/2"), SPEC) == "per_network"


@pytest.mark.parametrize("name", NETWORKS)
def test_a_network_in_a_stack_equals_it_alone(name):
    module, x, y, parameters, buffers, orders = setup(NETWORKS[name])
    stacked = train(module, x, y, parameters, buffers, orders, "auto")
    for k in range(4):
        alone = train(
            module, x, y, {n: v[k : k + 1] for n, v in parameters.items()}, buffers,
            orders[k : k + 1], "auto",
        )  # fmt: skip
        for key, value in alone.items():
            assert torch.equal(stacked[key][k], value[0]), (key, k)
            assert not torch.equal(value[0], parameters[key][k])  # it trained


@pytest.mark.parametrize("name", NETWORKS)
def test_in_float64_it_is_the_plain_way(name):
    """Against "per_network" (a module per network, autograd): in float64 the two differ only
    by roundings of 1e-16, so any weight the optimizer failed to move in the stack, or a
    gradient of the wrong network, would show far above the tolerance."""
    module, x, y, parameters, buffers, orders = setup(NETWORKS[name], dtype=torch.float64)
    stacked = train(module, x, y, parameters, buffers, orders, "per_network_stacked")
    plain = train(module, x, y, parameters, buffers, orders, "per_network")
    for key, value in plain.items():
        assert value.dtype == torch.float64
        torch.testing.assert_close(stacked[key], value, rtol=0, atol=1e-12)
        assert (value - parameters[key]).abs().max() > 1e-3  # and the weights moved


@pytest.mark.parametrize("name", NETWORKS)
def test_an_optimizer_failing_on_one_networks_numbers_loses_that_network_alone(name):
    module, x, y, parameters, buffers, orders = setup(NETWORKS[name])
    broken = {key: value.clone() for key, value in parameters.items()}
    first = next(iter(broken))
    broken[first][1].view(-1)[0] = float("nan")  # network 1's gradients are NaN from step 0
    trained = train(module, x, y, broken, buffers, orders, "auto", fail_on_nan=True)
    assert all(bool(torch.isnan(value[1]).all()) for value in trained.values())
    keep = [0, 2, 3]
    others = train(
        module, x, y, {k: v[keep] for k, v in parameters.items()}, buffers, orders[keep], "auto"
    )  # fmt: skip
    for key, value in others.items():
        assert torch.equal(trained[key][keep], value), key


def test_a_bug_after_a_network_was_lost_to_numerics_is_still_a_bug():
    """Network 1 is lost to numerics at step 0 (NaN weights from then on); at step 3 the
    optimizer fails on finite network 0 for no numeric reason: that is the plugin's error, as it
    would be on "per_network", raised at once, not taken for numerics because a NaN network shares
    the stack (which would train the stack again in smaller stacks first)."""
    built = []

    class LateBug(LayerwiseTrust):
        def __init__(self, params, **options):
            super().__init__(params, **options)
            built.append(self)

        def step(self, closure=None):
            self.count = getattr(self, "count", 0) + 1
            if self.count == 4 and bool(torch.isfinite(self.param_groups[0]["params"][0]).all()):
                raise RuntimeError("a bug")
            return super().step(closure)

    spec = OptimizerSpec(name="late", factory=LateBug, hyperparameters=SPEC.hyperparameters)
    module, x, y, parameters, buffers, orders = setup(NETWORKS["mlp"])
    broken = {key: value.clone() for key, value in parameters.items()}
    broken[next(iter(broken))][1].view(-1)[0] = float("nan")
    with pytest.raises(OptimizerStepError, match="'late' failed at step 3: RuntimeError: a bug"):
        train_networks(module, x, y, spec, {"fail_on_nan": True}, broken, buffers, orders, 2)
    assert len(built) == 4  # one stack of four, trained once


def test_an_error_that_is_not_numerics_stops_the_stack():
    class Fails(LayerwiseTrust):
        def step(self, closure=None):
            raise RuntimeError("no")

    spec = OptimizerSpec(name="fails", factory=Fails)
    module, x, y, parameters, buffers, orders = setup(NETWORKS["mlp"])
    with pytest.raises(OptimizerStepError, match="'fails' failed at step 0: RuntimeError: no"):
        train_networks(module, x, y, spec, {}, parameters, buffers, orders, 2)


class Replacing(torch.optim.Optimizer):
    """SGD written as `p.data = p - lr * g`: a new storage each step, which the stack never sees."""

    def __init__(self, params, lr=0.05):
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                p.data = p - group["lr"] * p.grad


class ClearingTrust(LayerwiseTrust):
    """LayerwiseTrust that sets every `p.grad = None` after its update (zero_grad(set_to_none))."""

    def step(self, closure=None):
        super().step(closure)
        self.zero_grad(set_to_none=True)


def test_an_optimizer_that_replaces_its_tensors_storage_trains_on_per_network():
    """Its updates would never reach the stack (the weights would stay at their init): the
    host sees the new storage after the first step and trains it on "per_network" instead."""
    spec = OptimizerSpec(name="replacing", factory=Replacing)
    module, x, y, parameters, buffers, orders = setup(NETWORKS["mlp"])
    auto, _ = train_networks(module, x, y, spec, {}, parameters, buffers, orders, 2)
    plain, _ = train_networks(
        module, x, y, spec, {}, parameters, buffers, orders, 2, path="per_network"
    )
    for key, value in plain.items():
        assert torch.equal(auto[key], value)
        assert not torch.equal(value, parameters[key])
    with pytest.raises(ValueError, match="updates its tensors in place"):
        train_networks(
            module, x, y, spec, {}, parameters, buffers, orders, 2, path="per_network_stacked"
        )


@pytest.mark.parametrize("name", NETWORKS)
def test_an_optimizer_that_clears_its_gradients_gets_them_again_each_step(name):
    spec = OptimizerSpec(
        name="clearing", factory=ClearingTrust, hyperparameters={"lr": Hyperparameter(float, 0.05)}
    )
    module, x, y, parameters, buffers, orders = setup(NETWORKS[name], dtype=torch.float64)
    stacked, _ = train_networks(
        module, x, y, spec, {}, parameters, buffers, orders, 2, path="per_network_stacked"
    )
    plain, _ = train_networks(
        module, x, y, spec, {}, parameters, buffers, orders, 2, path="per_network"
    )
    for key, value in plain.items():
        torch.testing.assert_close(stacked[key], value, rtol=0, atol=1e-12)
