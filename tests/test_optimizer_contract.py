"""How the host calls an optimizer (docs/optimizer-contract.md), tested against plain loops.

Every reference below is what a reader would write for one network: its own nn.Module, autograd,
F.cross_entropy, the optimizer used the textbook way. The host trains K networks in one stack
(paths "mlp" and "vmap") or one by one over worker threads ("per_network"); with the large-product
MLP of test_training.py every network equals its plain loop bit for bit (torch.equal).
"""

from __future__ import annotations

import copy
import json
import math
import pickle
import threading

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from benchsuite.builtins.optimizers import benchsuite_optimizers
from benchsuite.engine.batches import optimizer_seed, round_orders
from benchsuite.engine.stepping import closure_required
from benchsuite.engine.training import (
    PopulationRequest,
    TrainingSettings,
    choose_path,
    initial_parameters,
    regenerate,
    train_networks,
    train_population,
    train_populations,
)
from benchsuite.errors import BenchsuiteError, OptimizerStepError, SuiteError
from benchsuite.plugins import default_registry
from benchsuite.records import (
    Hyperparameter,
    Networks,
    OptimizerSpec,
    PriorSpec,
    kaiming_uniform_bound,
)
from benchsuite.schedules import Schedule, from_record, resolve
from benchsuite.resolved import expand, runnable_document
from benchsuite.suite import validate_suite

OPTIMIZERS = {spec.name: spec for spec in benchsuite_optimizers()}
KAIMING = PriorSpec(name="kaiming-uniform", family="uniform", scale=kaiming_uniform_bound)
N_TRAIN = 16
SEED = 7


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def large_product_mlp() -> nn.Sequential:
    """Every matmul at least 400 multiply-adds: bmm and mm agree bit for bit (test_training.py)."""
    return nn.Sequential(
        nn.Flatten(), nn.Linear(64, 100, bias=False), nn.ReLU(), nn.Linear(100, 2, bias=False)
    )


def paper_like_mlp() -> nn.Sequential:
    return nn.Sequential(
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 2)
    )


def data(n: int = N_TRAIN, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=generator), torch.arange(n) % 2


def setup(count: int = 4, epochs: int = 3, module=None, n: int = N_TRAIN):
    module = module if module is not None else large_product_mlp()
    x, y = data(n)
    parameters, buffers = initial_parameters(module, KAIMING, SEED, range(count), "cpu")
    orders = round_orders(SEED, range(count), n, epochs, "independent")
    seeds = [optimizer_seed(SEED, a) for a in range(count)]
    return module, x, y, parameters, buffers, orders, seeds


def plain_network(module, parameters, k):
    network = copy.deepcopy(module).train()
    with torch.no_grad():
        for name, value in network.named_parameters():
            value.copy_(parameters[name][k])
    return network


def batches(orders, k, batch_size=2):
    for epoch_order in orders[k]:
        for start in range(0, len(epoch_order), batch_size):
            yield epoch_order[start : start + batch_size]


def assert_equal(trained, k, network, exact=True):
    for name, value in network.named_parameters():
        if exact:
            assert torch.equal(trained[name][k], value.detach()), (k, name)
        else:
            torch.testing.assert_close(trained[name][k], value.detach(), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# SAM: a textbook two-pass loop on one nn.Module


def sam_plain(module, parameters, k, x, y, orders, lr, momentum, rho):
    """Foret et al.'s SAM as their reference code (davda54/sam) writes it, over torch.optim.SGD."""
    network = plain_network(module, parameters, k)
    tensors = list(network.parameters())
    optimizer = torch.optim.SGD(tensors, lr=lr, momentum=momentum)
    for indices in batches(orders, k):
        optimizer.zero_grad()
        F.cross_entropy(network(x[indices]), y[indices]).backward()
        grad_norm = torch.norm(torch.stack([p.grad.norm(p=2) for p in tensors]), p=2)
        scale = rho / (grad_norm + 1e-12)
        with torch.no_grad():
            old = [p.clone() for p in tensors]
            for p in tensors:
                p.add_(p.grad * scale)  # ascend to w + e
        optimizer.zero_grad()
        F.cross_entropy(network(x[indices]), y[indices]).backward()  # gradient at w + e
        with torch.no_grad():
            for p, o in zip(tensors, old):
                p.copy_(o)  # back to w
        optimizer.step()  # descend from w with the gradient taken at w + e
    return network


@pytest.mark.parametrize("path", ["mlp", "vmap"])
def test_sam_in_a_stack_equals_a_textbook_sam_loop_per_network(path):
    module, x, y, parameters, buffers, orders, seeds = setup()
    hyperparameters = {"lr": 0.05, "momentum": 0.9, "rho": 0.1}
    assert choose_path(module, OPTIMIZERS["sam"]) == "mlp"
    trained, _ = train_networks(
        module, x, y, OPTIMIZERS["sam"], hyperparameters, parameters, buffers, orders, 2,
        path=path, seeds=seeds,
    )  # fmt: skip
    for k in range(4):
        reference = sam_plain(module, parameters, k, x, y, orders, **hyperparameters)
        assert_equal(trained, k, reference)
    # the norm really is per network: one norm over the whole stack trains something else
    sgd, _ = train_networks(
        module, x, y, OPTIMIZERS["sgd"], {"lr": 0.05, "momentum": 0.9}, parameters, buffers,
        orders, 2,
    )  # fmt: skip
    assert not torch.equal(sgd["1.weight"], trained["1.weight"])


def test_sam_on_tiny_layers_equals_itself_alone_and_the_plain_loop_to_rounding():
    module, x, y, parameters, buffers, orders, seeds = setup(count=5, module=paper_like_mlp(), n=7)
    spec, hyperparameters = OPTIMIZERS["sam"], dict(OPTIMIZERS["sam"].defaults)
    stacked, _ = train_networks(
        module, x, y, spec, hyperparameters, parameters, buffers, orders, 2, seeds=seeds
    )
    for k in range(5):
        alone, _ = train_networks(
            module, x, y, spec, hyperparameters, {n: v[k : k + 1] for n, v in parameters.items()},
            {}, orders[k : k + 1], 2, seeds=seeds[k : k + 1],
        )  # fmt: skip
        for name in alone:
            assert torch.equal(stacked[name][k], alone[name][0])
        reference = sam_plain(module, parameters, k, x, y, orders, **hyperparameters)
        assert_equal(stacked, k, reference, exact=False)


# ---------------------------------------------------------------------------------------------
# SGLD: the same noise stream, drawn by a plain loop


def sgld_plain(module, parameters, k, x, y, orders, lr, temperature):
    """SGD, then each step one standard normal vector of the network's parameter count from its
    own generator (seeded with optimizer_seed(seed, attempt)), scaled by sqrt(2 lr T)."""
    network = plain_network(module, parameters, k)
    tensors = list(network.parameters())
    optimizer = torch.optim.SGD(tensors, lr=lr)
    generator = torch.Generator().manual_seed(optimizer_seed(SEED, k))
    total = sum(p.numel() for p in tensors)
    for indices in batches(orders, k):
        optimizer.zero_grad()
        F.cross_entropy(network(x[indices]), y[indices]).backward()
        optimizer.step()
        noise = torch.randn(total, generator=generator)
        with torch.no_grad():
            offset = 0
            for p in tensors:
                p.add_(
                    noise[offset : offset + p.numel()].view_as(p),
                    alpha=math.sqrt(2 * lr * temperature),
                )
                offset += p.numel()
    return network


@pytest.mark.parametrize("path", ["mlp", "vmap"])
def test_sgld_in_a_stack_equals_plain_sgd_plus_each_networks_own_noise(path):
    module, x, y, parameters, buffers, orders, seeds = setup()
    hyperparameters = {"lr": 0.05, "temperature": 1e-3}
    trained, _ = train_networks(
        module, x, y, OPTIMIZERS["sgld"], hyperparameters, parameters, buffers, orders, 2,
        path=path, seeds=seeds,
    )  # fmt: skip
    for k in range(4):
        assert_equal(trained, k, sgld_plain(module, parameters, k, x, y, orders, **hyperparameters))
    cold, _ = train_networks(
        module, x, y, OPTIMIZERS["sgld"], {"lr": 0.05, "temperature": 0.0}, parameters, buffers,
        orders, 2, path=path, seeds=seeds,
    )  # fmt: skip
    sgd, _ = train_networks(
        module, x, y, OPTIMIZERS["sgd"], {"lr": 0.05}, parameters, buffers, orders, 2, path=path
    )
    for name in sgd:  # at temperature 0 it is SGD; above, the noise moved every network
        assert torch.equal(cold[name], sgd[name])
        assert all(not torch.equal(trained[name][k], sgd[name][k]) for k in range(4))


def test_sgld_populations_are_regenerable_and_equal_when_trained_together():
    """Each network's noise comes from (seed, attempt): rounds, stacks shared between cells and
    regeneration all give the same networks."""
    module, (x, y) = paper_like_mlp(), data()
    spec, hyperparameters = OPTIMIZERS["sgld"], {"lr": 0.05, "temperature": 1e-4}
    settings = TrainingSettings(epochs=3, networks_per_round=2)
    population = train_population(
        module, x, y, spec, hyperparameters, KAIMING, settings, target=4, seed=3, device="cpu"
    )
    again, _ = regenerate(
        module, x, y, spec, hyperparameters, KAIMING, settings, 3, population.found_at, "cpu"
    )
    for name, value in again.items():
        assert torch.equal(population.parameters[name], value)
    requests = [
        PopulationRequest(
            copy.deepcopy(module),
            *data(seed=i),
            spec,
            hyperparameters,
            KAIMING,
            TrainingSettings(epochs=3),
            target=3,
            seed=10 + i,
            device="cpu",
        )
        for i in range(3)
    ]
    for request, together in zip(requests, train_populations(requests)):
        alone = train_population(
            request.module, request.x_train, request.y_train, spec, hyperparameters, KAIMING,
            request.settings, request.target, request.seed, "cpu",
        )  # fmt: skip
        assert together.found_at.tolist() == alone.found_at.tolist()
        for name, value in alone.parameters.items():
            assert torch.equal(together.parameters[name], value)


def test_stack_aware_optimizers_need_their_seeds_and_a_stack():
    module, x, y, parameters, buffers, orders, seeds = setup(count=2, epochs=1)
    spec = OPTIMIZERS["sgld"]
    with pytest.raises(ValueError, match="pass seeds="):
        train_networks(module, x, y, spec, spec.defaults, parameters, buffers, orders, 2)
    with pytest.raises(ValueError, match="train it on 'mlp' or 'vmap'"):
        train_networks(
            module, x, y, spec, spec.defaults, parameters, buffers, orders, 2,
            path="per_network", seeds=seeds,
        )  # fmt: skip
    with pytest.raises(ValueError, match="2 networks but 1 seeds"):
        Networks(count=2, seeds=(1,))


# ---------------------------------------------------------------------------------------------
# The call sequence: train(), gradient, step(closure), eval()


class Averaging(torch.optim.Optimizer):
    """A schedule-free-style optimizer written for this test: SGD on z, weights y = z while
    training and x = the running mean of z once `eval()` is called. Records how it is called;
    its closure must re-evaluate the same batch (the loss is compared with the host's)."""

    def __init__(self, params, lr=0.05, uses_closure=False):
        super().__init__(params, {"lr": lr})
        self.calls, self.uses_closure, self.training = [], uses_closure, False

    def train(self):
        self.calls.append("train")
        self.training = True
        with torch.no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    if "z" in self.state[p]:
                        p.copy_(self.state[p]["z"])

    def eval(self):
        self.calls.append("eval")
        self.training = False
        with torch.no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    p.copy_(self.state[p]["mean"])

    @torch.no_grad()
    def step(self, closure=None):
        if not self.training:
            raise RuntimeError("Optimizer was not in train mode")
        self.calls.append("step+closure" if closure is not None else "step")
        grads = [p.grad.clone() for g in self.param_groups for p in g["params"]]
        if self.uses_closure:
            with torch.enable_grad():
                closure()
            again = [p.grad for g in self.param_groups for p in g["params"]]
            assert all(torch.equal(a, b) for a, b in zip(grads, again))  # the same batch, same w
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                if "z" not in state:
                    state["z"], state["mean"], state["n"] = p.clone(), torch.zeros_like(p), 0
                state["z"].add_(p.grad, alpha=-group["lr"])
                state["n"] += 1
                state["mean"].add_((state["z"] - state["mean"]) / state["n"])
                p.copy_(state["z"])


def averaging_plain(module, parameters, k, x, y, orders, lr=0.05):
    network = plain_network(module, parameters, k)
    optimizer = Averaging(network.parameters(), lr=lr)
    optimizer.train()
    for indices in batches(orders, k):
        optimizer.zero_grad()
        F.cross_entropy(network(x[indices]), y[indices]).backward()
        optimizer.step()
    optimizer.eval()
    return network, optimizer


@pytest.mark.parametrize("uses_closure", [False, True])
@pytest.mark.parametrize("kind", ["per_network", "elementwise"])
def test_train_and_eval_are_honoured_and_the_weights_are_the_averaged_ones(kind, uses_closure):
    built = []

    def factory(params, lr):
        built.append(Averaging(params, lr=lr, uses_closure=uses_closure))
        return built[-1]

    spec = OptimizerSpec(
        name="averaging", factory=factory, hyperparameters={"lr": Hyperparameter(float, 0.05)},
        elementwise=kind == "elementwise", uses_closure=uses_closure,
    )  # fmt: skip
    module, x, y, parameters, buffers, orders, _ = setup(count=3, epochs=2)
    paths = ["per_network"] if kind == "per_network" else ["mlp", "vmap"]
    for path in paths:
        built.clear()
        trained, _ = train_networks(
            module, x, y, spec, {"lr": 0.05}, parameters, buffers, orders, 2, path=path
        )
        steps = 2 * N_TRAIN // 2
        step = "step+closure" if uses_closure else "step"
        for optimizer in built:
            assert optimizer.calls == ["train"] + [step] * steps + ["eval"]
        for k in range(3):
            reference, optimizer = averaging_plain(module, parameters, k, x, y, orders)
            assert_equal(trained, k, reference)  # the averaged weights, as eval() left them
            for p in reference.parameters():  # which are not the last iterate
                assert not torch.equal(p, optimizer.state[p]["z"])


def test_the_closure_gets_the_per_network_losses_on_a_stack_and_the_loss_alone_otherwise():
    seen = []

    class Recording(torch.optim.SGD):
        def __init__(self, params, lr=0.01, networks=None):
            super().__init__(params, lr=lr)

        @torch.no_grad()
        def step(self, closure=None):
            with torch.enable_grad():
                seen.append(closure())
            return super().step()

    stacked = OptimizerSpec(name="r", factory=Recording, uses_closure=True, stacked=True)
    plain = OptimizerSpec(name="r", factory=Recording, uses_closure=True)
    module, x, y, parameters, buffers, orders, seeds = setup(count=3, epochs=1)
    for path in ("mlp", "vmap"):
        seen.clear()
        train_networks(
            module, x, y, stacked, {}, parameters, buffers, orders, 2, path=path, seeds=seeds
        )
        assert all(loss.shape == (3,) for loss in seen) and len(seen) == N_TRAIN // 2
        first = orders[:, 0, :2]  # the first step's batches, at the initial weights
        for k in range(3):
            network = plain_network(module, parameters, k)
            expected = F.cross_entropy(network(x[first[k]]), y[first[k]])
            torch.testing.assert_close(seen[0][k], expected.detach())
    seen.clear()
    train_networks(module, x, y, plain, {}, parameters, buffers, orders, 2)
    assert all(loss.dim() == 0 for loss in seen) and len(seen) == 3 * N_TRAIN // 2


def test_a_step_that_requires_a_closure_gets_one_without_declaring_it():
    assert closure_required(torch.optim.LBFGS([torch.zeros(1, requires_grad=True)]))
    assert not closure_required(torch.optim.SGD([torch.zeros(1, requires_grad=True)]))


# ---------------------------------------------------------------------------------------------
# Errors


class FailsAt(torch.optim.SGD):
    def __init__(self, params, lr=0.01, at=3, networks=None):
        super().__init__(params, lr=lr)
        self.at, self.count = at, 0

    def step(self, closure=None):
        if self.count == self.at:
            raise FloatingPointError("the update overflowed\n(second line)")
        self.count += 1
        return super().step()


@pytest.mark.parametrize("path", ["per_network", "mlp", "vmap"])
def test_a_step_that_raises_is_one_clear_error_naming_optimizer_step_and_cause(path):
    spec = OptimizerSpec(
        name="fragile", factory=FailsAt, hyperparameters={"at": Hyperparameter(int, 3)},
        elementwise=path != "per_network",
    )  # fmt: skip
    module, x, y, parameters, buffers, orders, _ = setup(count=3, epochs=1)
    with pytest.raises(OptimizerStepError) as caught:
        train_networks(module, x, y, spec, {"at": 3}, parameters, buffers, orders, 2, path=path)
    error = caught.value
    assert isinstance(error, BenchsuiteError) and isinstance(error.__cause__, FloatingPointError)
    assert str(error) == (
        "optimizer 'fragile' failed at step 3: FloatingPointError: the update overflowed (second line)"
    )
    assert error.optimizer == "fragile" and error.step == 3
    assert str(pickle.loads(pickle.dumps(error))) == str(error)  # crosses process boundaries


def test_an_optimizer_that_cannot_be_built_or_needs_an_undeclared_closure_says_so():
    def broken(params, lr):
        raise TypeError("unexpected keyword 'betas'")

    module, x, y, parameters, buffers, orders, _ = setup(count=2, epochs=1)
    spec = OptimizerSpec(
        name="broken", factory=broken, hyperparameters={"lr": Hyperparameter(float, 0.1)}
    )
    with pytest.raises(OptimizerStepError, match="'broken' failed while being built: TypeError"):
        train_networks(module, x, y, spec, {"lr": 0.1}, parameters, buffers, orders, 2)
    sam = OPTIMIZERS["sam"]
    undeclared = OptimizerSpec(
        name="sam-undeclared",
        factory=sam.factory,
        hyperparameters=sam.hyperparameters,
        stacked=True,
    )
    with pytest.raises(
        OptimizerStepError, match="step 0: RuntimeError: SAM needs the closure.*uses_closure=True"
    ):
        train_networks(
            module, x, y, undeclared, sam.defaults, parameters, buffers, orders, 2,
            seeds=[1, 2],
        )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# The per-network path: worker threads, single-threaded kernels, identical results


class NormalizedGradientDescent(torch.optim.Optimizer):
    """p -= lr g / ||g|| per tensor: not elementwise, so it trains one network at a time."""

    def __init__(self, params, lr=0.05):
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                p.add_(p.grad / (p.grad.norm() + 1e-12), alpha=-group["lr"])


@pytest.mark.parametrize("margin", [0.0, math.inf])  # workers lose / win the timed wave
def test_per_network_workers_do_not_change_the_networks(margin, monkeypatch):
    from benchsuite.engine import training

    monkeypatch.setattr(training, "PARALLEL_MARGIN", margin)
    threads = []

    class Counting(NormalizedGradientDescent):
        def step(self, closure=None):
            threads.append((torch.get_num_threads(), threading.get_ident()))
            return super().step(closure)

    spec = OptimizerSpec(
        name="ngd", factory=Counting, hyperparameters={"lr": Hyperparameter(float, 0.05)}
    )
    module, x, y, parameters, buffers, orders, _ = setup(count=8, epochs=2)
    torch.set_num_threads(2)
    try:
        results = [
            train_networks(
                module, x, y, spec, {"lr": 0.05}, parameters, buffers, orders, 2, workers=w,
                path="per_network",
            )[0]
            for w in (1, 3, "auto")
        ]
        assert torch.get_num_threads() == 2  # the caller's setting is back
    finally:
        torch.set_num_threads(1)
    assert {count for count, _ in threads} == {1}  # every worker's kernels ran on one thread
    assert len({ident for _, ident in threads}) > 1  # the timed wave ran on workers
    # the networks after it go the winner's way: workers (margin inf) or this thread (margin 0)
    assert (threads[-1][1] == threading.get_ident()) == (margin == 0.0)
    for k in range(8):
        network = plain_network(module, parameters, k)
        optimizer = NormalizedGradientDescent(network.parameters(), lr=0.05)
        for indices in batches(orders, k):
            optimizer.zero_grad()
            F.cross_entropy(network(x[indices]), y[indices]).backward()
            optimizer.step()
        for trained in results:
            assert_equal(trained, k, network)


# ---------------------------------------------------------------------------------------------
# Learning-rate schedules


def test_schedule_factors():
    cosine = Schedule(name="cosine", final=0.1)
    factors = cosine.factors(10, 5)
    assert factors[0] == 1.0 and factors == sorted(factors, reverse=True)
    assert factors[5] == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi * 0.5)) / 2)
    assert cosine.factor(10, 10, 5) == pytest.approx(0.1)  # reached after the last step
    step = Schedule(name="step", every=2, gamma=0.5)
    assert step.factors(12, 2) == [1.0] * 4 + [0.5] * 4 + [0.25] * 4  # at epoch boundaries
    warm = Schedule(name="cosine", final=0.0, warmup_steps=4)
    assert warm.factors(8, 4)[:5] == [0.25, 0.5, 0.75, 1.0, 1.0]  # then cosine over the rest
    assert Schedule(warmup_fraction=0.25).factors(8, 8) == [0.5, 1.0] + [1.0] * 6
    combined = Schedule(name="step", every=1, gamma=0.5, warmup_steps=2)
    assert combined.factors(4, 2) == [0.5, 1.0, 0.5, 0.5]


def test_schedules_resolve_to_records_and_the_default_to_nothing():
    assert resolve("constant") is None and resolve({"name": "constant", "warmup_steps": 0}) is None
    assert resolve("cosine") == {"name": "cosine", "final": 0.0}
    record = resolve({"name": "step", "every": 3, "warmup_fraction": 0.1})
    assert record == {"name": "step", "every": 3, "gamma": 0.1, "warmup_fraction": 0.1}
    assert resolve(record) == record and from_record(record).record == record


def plain_with_schedule(spec, hyperparameters, module, parameters, k, x, y, orders, factors):
    """torch.optim with LambdaLR stepped once per optimizer step: lr = base x factor(t)."""
    network = plain_network(module, parameters, k)
    optimizer = spec.factory(network.parameters(), **hyperparameters)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: factors[t])
    for indices in batches(orders, k):
        optimizer.zero_grad()
        F.cross_entropy(network(x[indices]), y[indices]).backward()
        optimizer.step()
        if scheduler.last_epoch + 1 < len(factors):
            scheduler.step()
    return network


@pytest.mark.parametrize(
    "name, path",
    [
        ("sgd", "mlp"),
        ("adam", "mlp"),
        ("adamw", "vmap"),
        ("rmsprop", "mlp"),
        ("ngd", "per_network"),
    ],
)
def test_a_schedule_sets_every_optimizers_rate_per_step_as_a_plain_lambda_lr_would(name, path):
    if name == "ngd":
        spec = OptimizerSpec(
            name="ngd",
            factory=NormalizedGradientDescent,
            hyperparameters={"lr": Hyperparameter(float, 0.05)},
        )
    else:
        spec = OPTIMIZERS[name]
    hyperparameters = {**spec.defaults, "lr": 0.05 if name in ("sgd", "ngd") else 0.01}
    schedule = Schedule(name="cosine", final=0.1, warmup_steps=3)
    module, x, y, parameters, buffers, orders, _ = setup(count=3, epochs=3)
    factors = schedule.factors(3 * N_TRAIN // 2, N_TRAIN // 2)
    trained, _ = train_networks(
        module, x, y, spec, hyperparameters, parameters, buffers, orders, 2, path=path,
        schedule=schedule,
    )  # fmt: skip
    constant, _ = train_networks(
        module, x, y, spec, hyperparameters, parameters, buffers, orders, 2, path=path
    )
    assert not torch.equal(trained["1.weight"], constant["1.weight"])
    for k in range(3):
        reference = plain_with_schedule(
            spec, hyperparameters, module, parameters, k, x, y, orders, factors
        )
        assert_equal(trained, k, reference)


def test_a_population_trains_and_regenerates_under_its_schedule():
    module, x, y = paper_like_mlp(), *data()
    spec = OPTIMIZERS["adam"]
    settings = TrainingSettings(epochs=3, schedule=Schedule(name="step", every=1, gamma=0.5))
    population = train_population(
        module, x, y, spec, spec.defaults, KAIMING, settings, target=3, seed=5, device="cpu"
    )
    again, _ = regenerate(
        module, x, y, spec, spec.defaults, KAIMING, settings, 5, population.found_at, "cpu"
    )
    for name, value in again.items():
        assert torch.equal(population.parameters[name], value)


SUITE = {
    "tasks": [{"dataset": "digits", "classes": [[0, 1]], "n_train": [4]}],
    "architectures": [{"name": "mlp", "widths": ["1/6"]}],
}


def suite(**entry):
    return validate_suite(
        {**SUITE, "optimizers": [{"name": "sgd", **entry}]}, default_registry(), "s.yaml"
    )


def test_a_suite_without_a_schedule_resolves_as_before_and_one_with_it_stores_it():
    plain, constant = suite(), suite(schedule="constant")
    assert "schedule" not in plain.resolved["optimizers"][0]["settings"]
    assert constant.suite_id == plain.suite_id
    assert [c.cell_id for c in expand(constant)] == [c.cell_id for c in expand(plain)]
    cosine = suite(schedule={"name": "cosine", "final": 0.05, "warmup_steps": 2})
    record = {"name": "cosine", "final": 0.05, "warmup_steps": 2}
    assert cosine.resolved["optimizers"][0]["settings"]["schedule"] == record
    assert cosine.suite_id != plain.suite_id
    (cell,) = expand(cosine)
    assert cell.identity["settings"]["schedule"] == record
    document = runnable_document(cosine.resolved)  # `publish` writes this; it validates back
    assert validate_suite(document, default_registry(), "s.yaml").suite_id == cosine.suite_id


@pytest.mark.parametrize(
    "folder, suite_id",
    [
        ("fashion-mnist-width-mlp", "525b9f6ad6c6831a"),
        ("fashion-mnist-depth-mlp", "8353542c85aaf9bb"),
    ],
)
def test_published_studies_still_resolve_to_their_published_json_and_id(folder, suite_id):
    """Schedules (and any later entry key) must not move the ids published leaderboards cite."""
    from pathlib import Path

    from benchsuite.suite import load_suite

    published = Path(__file__).parent.parent / "leaderboards" / folder
    suite = load_suite(published / "suite.yaml", default_registry(), allow_large=True)
    assert suite.resolved == json.loads((published / "suite.json").read_text())
    assert suite.suite_id == suite_id


@pytest.mark.parametrize(
    "schedule, key, message",
    [
        (
            "cosin",
            "optimizers[0].schedule.name",
            "'cosin' is not a schedule; did you mean 'cosine'",
        ),
        (
            {"name": "step"},
            "optimizers[0].schedule.every",
            "missing required key of schedule 'step'",
        ),
        (
            {"name": "step", "every": 2, "gama": 0.5},
            "optimizers[0].schedule.gama",
            "did you mean 'gamma'",
        ),
        (
            {"name": "step", "every": 0},
            "optimizers[0].schedule.every",
            "expected an integer >= 1, got number 0",
        ),
        (
            {"name": "cosine", "final": 2},
            "optimizers[0].schedule.final",
            "expected a number in [0, 1]",
        ),
        (
            {"name": "cosine", "warmup_steps": 2, "warmup_fraction": 0.1},
            "optimizers[0].schedule.warmup_fraction",
            "not both",
        ),
        (
            {"name": "constant", "warmup_fraction": 1.0},
            "optimizers[0].schedule.warmup_fraction",
            "[0, 1)",
        ),
        (3, "optimizers[0].schedule", "expected a name (constant, step, cosine)"),
    ],
)
def test_invalid_schedules_fail_on_one_line_with_file_and_key(schedule, key, message):
    with pytest.raises(SuiteError) as caught:
        suite(schedule=schedule)
    error = caught.value
    assert error.file == "s.yaml" and error.key == key and message in error.reason
    assert "\n" not in str(error) and str(error).startswith(f"s.yaml: {key}: ")


def test_stack_aware_built_ins_validate_in_suites():
    registry = default_registry()
    resolved = validate_suite(
        {**SUITE, "optimizers": [{"name": "sam", "rho": 0.1}, {"name": "sgld", "schedule": "cosine"}]},
        registry, "s.yaml",
    ).resolved  # fmt: skip
    assert resolved["optimizers"][0]["hyperparameters"] == {"lr": 0.01, "momentum": 0.0, "rho": 0.1}
    with pytest.raises(SuiteError, match=r"optimizers\[0\].rho: expected a finite number >= 0"):
        validate_suite({**SUITE, "optimizers": [{"name": "sam", "rho": -1}]}, registry, "s.yaml")


# ---------------------------------------------------------------------------------------------
# Real step-owning optimizers from other packages, wrapped as a plugin author would (skipped when
# the package is not installed; neither is a dependency of benchsuite)


def test_pytorch_optimizers_sam_trained_by_the_host_equals_its_documented_loop():
    pytorch_optimizer = pytest.importorskip("pytorch_optimizer")

    def factory(params, lr, rho):
        return pytorch_optimizer.SAM(params, torch.optim.SGD, rho=rho, lr=lr)

    spec = OptimizerSpec(
        name="po-sam", factory=factory, uses_closure=True,
        hyperparameters={"lr": Hyperparameter(float, 0.05), "rho": Hyperparameter(float, 0.1)},
    )  # fmt: skip
    module, x, y, parameters, buffers, orders, _ = setup(count=3, epochs=2)
    trained, _ = train_networks(module, x, y, spec, spec.defaults, parameters, buffers, orders, 2)
    for k in range(3):
        network = plain_network(module, parameters, k)
        optimizer = factory(network.parameters(), **spec.defaults)
        for indices in batches(orders, k):  # the loop of pytorch_optimizer.SAM's docstring

            def closure(indices=indices, network=network, optimizer=optimizer):
                optimizer.zero_grad()
                loss = F.cross_entropy(network(x[indices]), y[indices])
                loss.backward()
                return loss

            optimizer.zero_grad()
            closure()
            optimizer.step(closure)
        assert_equal(trained, k, network)


@pytest.mark.parametrize("elementwise", [False, True])
def test_schedule_free_adamw_trains_and_is_scored_at_its_eval_weights(elementwise):
    schedulefree = pytest.importorskip("schedulefree")

    def factory(params, lr):
        return schedulefree.AdamWScheduleFree(params, lr=lr)

    spec = OptimizerSpec(
        name="sf-adamw", factory=factory, elementwise=elementwise,
        hyperparameters={"lr": Hyperparameter(float, 0.01)},
    )  # fmt: skip
    module, x, y, parameters, buffers, orders, _ = setup(count=3, epochs=2)
    trained, _ = train_networks(module, x, y, spec, spec.defaults, parameters, buffers, orders, 2)
    for k in range(3):
        network = plain_network(module, parameters, k)
        optimizer = factory(network.parameters(), lr=0.01)
        optimizer.train()
        for indices in batches(orders, k):
            optimizer.zero_grad()
            F.cross_entropy(network(x[indices]), y[indices]).backward()
            optimizer.step()
        training_weights = [p.detach().clone() for p in network.parameters()]
        optimizer.eval()
        assert_equal(trained, k, network)  # x, the averaged weights
        assert not any(
            torch.equal(trained[name][k], y_weight)
            for name, y_weight in zip(trained, training_weights)
        )
