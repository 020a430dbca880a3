"""Many-model gradient training: stacked training equals independent training, bit for bit.

"Independent" means what a reader would write: one plain nn.Module per network, its own
torch.optim optimizer, autograd, F.cross_entropy, the same init and the same batch order. For an
MLP whose matmuls are all at least 400 multiply-adds, PyTorch's CPU bmm (stacked) and mm (plain)
run the same MKL kernel and the parameters agree exactly (torch.equal). For tiny layers bmm falls
back to a plain loop and the last bit may differ from mm; there we check the property that matters
for reproducibility: a network trained in a stack of K equals the same network trained alone.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from benchsuite.builtins.optimizers import benchsuite_optimizers
from benchsuite.engine.batches import (
    batch_indices,
    derive_seed,
    init_seed,
    network_orders,
    round_orders,
    shared_orders,
)
from benchsuite.engine.stacked_mlp import input_features, plan_mlp, train_stacked_mlp
from benchsuite.engine.training import (
    TrainingSettings,
    choose_path,
    initial_parameters,
    regenerate,
    train_networks,
    train_population,
)
from benchsuite.records import Hyperparameter, OptimizerSpec, PriorSpec, kaiming_uniform_bound
from benchsuite.stacked import accuracy

# the elementwise built-ins; the stack-aware ones (sam, sgld) are tested in test_optimizer_contract.py
OPTIMIZERS = {spec.name: spec for spec in benchsuite_optimizers() if spec.elementwise}
KAIMING = PriorSpec(name="kaiming-uniform", family="uniform", scale=kaiming_uniform_bound)
N_TRAIN = 16


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny kernels: one thread is as fast when the machine is idle and far faster when it is not
    (test_the_thread_count_does_not_change_the_results checks that results do not depend on it)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def large_product_mlp() -> nn.Sequential:
    """Every matmul (forward and backward, batch 2) is at least 400 multiply-adds."""
    return nn.Sequential(
        nn.Flatten(), nn.Linear(64, 100, bias=False), nn.ReLU(), nn.Linear(100, 2, bias=False)
    )


def paper_like_mlp(bias: bool = False) -> nn.Sequential:
    """The paper MLP's shape in miniature: max-pool, flatten, shrinking hidden layers, 2 logits."""
    return nn.Sequential(
        nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(16, 12, bias=bias), nn.ReLU(),
        nn.Linear(12, 6, bias=bias), nn.ReLU(),
        nn.Linear(6, 2, bias=bias),
    )  # fmt: skip


def data(n: int = N_TRAIN, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=generator), torch.arange(n) % 2


def separable_data(n: int = N_TRAIN) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 1 bright, class 0 dark: linearly separable with a wide margin."""
    generator = torch.Generator().manual_seed(1)
    labels = torch.arange(n) % 2
    images = 0.3 * torch.randn(n, 1, 8, 8, generator=generator) + (2.0 * labels - 1).view(
        n, 1, 1, 1
    )
    return images, labels


def train_plain(module, parameters, k, x, y, orders, batch_size, spec, hyperparameters):
    """Network k trained the ordinary way: its own module, optimizer, autograd and loss."""
    network = copy.deepcopy(module).train()
    with torch.no_grad():
        for name, value in network.named_parameters():
            value.copy_(parameters[name][k])
    optimizer = spec.factory(network.parameters(), **hyperparameters)
    for epoch_order in orders[k]:
        for start in range(0, len(epoch_order), batch_size):
            indices = epoch_order[start : start + batch_size]

            def closure(indices=indices):
                optimizer.zero_grad()
                loss = F.cross_entropy(network(x[indices]), y[indices])
                loss.backward()
                return loss

            optimizer.step(closure)
    return {name: value.detach() for name, value in network.named_parameters()}


def single(parameters, k):
    return {name: value[k : k + 1] for name, value in parameters.items()}


HYPERPARAMETERS = {
    "sgd": dict(OPTIMIZERS["sgd"].defaults),
    "sgd-momentum": {
        **OPTIMIZERS["sgd"].defaults,
        "momentum": 0.9,
        "weight_decay": 1e-3,
        "nesterov": True,
    },
    "adam": dict(OPTIMIZERS["adam"].defaults),
    "adamw": dict(OPTIMIZERS["adamw"].defaults),
    "rmsprop": {**OPTIMIZERS["rmsprop"].defaults, "momentum": 0.5},
    "adagrad": dict(OPTIMIZERS["adagrad"].defaults),
}


@pytest.mark.parametrize("path", ["mlp", "vmap"])
@pytest.mark.parametrize("case", sorted(HYPERPARAMETERS))
def test_stacked_training_equals_plain_module_training_bit_for_bit(case, path):
    spec, hyperparameters = OPTIMIZERS[case.split("-")[0]], HYPERPARAMETERS[case]
    module, (x, y) = large_product_mlp(), data()
    count, epochs = 4, 3
    parameters, buffers = initial_parameters(module, KAIMING, 7, range(count), "cpu")
    orders = round_orders(7, range(count), N_TRAIN, epochs, "independent")
    trained, _ = train_networks(
        module, x, y, spec, hyperparameters, parameters, buffers, orders, 2, path=path
    )
    for k in range(count):
        reference = train_plain(module, parameters, k, x, y, orders, 2, spec, hyperparameters)
        for name, value in reference.items():
            assert not torch.equal(value, parameters[name][k])  # it did train
            assert torch.equal(trained[name][k], value), (case, path, k, name)


@pytest.mark.parametrize("batch_size", [8, N_TRAIN])
@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_larger_batches_and_full_batch_equal_plain_training_too(name, batch_size):
    spec, module, (x, y) = OPTIMIZERS[name], large_product_mlp(), data()
    parameters, buffers = initial_parameters(module, KAIMING, 8, range(3), "cpu")
    orders = round_orders(8, range(3), N_TRAIN, 3, "independent")
    trained, _ = train_networks(
        module, x, y, spec, dict(spec.defaults), parameters, buffers, orders, batch_size
    )
    for k in range(3):
        reference = train_plain(
            module, parameters, k, x, y, orders, batch_size, spec, spec.defaults
        )
        for key, value in reference.items():
            assert torch.equal(trained[key][k], value)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_a_network_trained_in_a_stack_equals_it_trained_alone(name, bias):
    """Tiny layers (bmm loops, mm calls MKL): exact against K=1, within rounding of plain modules."""
    spec, module, (x, y) = (
        OPTIMIZERS[name],
        paper_like_mlp(bias),
        data(n=7),
    )  # 7 % 2: a partial batch
    hyperparameters = dict(spec.defaults)
    count, epochs = 5, 4
    parameters, buffers = initial_parameters(module, KAIMING, 3, range(count), "cpu")
    orders = round_orders(3, range(count), 7, epochs, "independent")
    stacked, _ = train_networks(module, x, y, spec, hyperparameters, parameters, buffers, orders, 2)
    vmapped, _ = train_networks(
        module, x, y, spec, hyperparameters, parameters, buffers, orders, 2, path="vmap"
    )
    for k in range(count):
        alone, _ = train_networks(
            module, x, y, spec, hyperparameters, single(parameters, k), {}, orders[k : k + 1], 2
        )
        reference = train_plain(module, parameters, k, x, y, orders, 2, spec, hyperparameters)
        for key in alone:
            assert torch.equal(stacked[key][k], alone[key][0])
            assert torch.equal(vmapped[key][k], stacked[key][k])
            torch.testing.assert_close(stacked[key][k], reference[key], rtol=1e-5, atol=1e-6)


class NormalizedGradientDescent(torch.optim.Optimizer):
    """p -= lr * g / ||g|| per tensor: the norm mixes entries, so stacking would mix networks."""

    def __init__(self, params, lr=0.05):
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad / (p.grad.norm() + 1e-12), alpha=-group["lr"])
        return loss


NON_ELEMENTWISE = [
    OptimizerSpec(
        name="normalized-gd", factory=NormalizedGradientDescent,
        hyperparameters={"lr": Hyperparameter(float, 0.05)}, elementwise=False,
    ),
    OptimizerSpec(
        name="lbfgs", factory=torch.optim.LBFGS,
        hyperparameters={"lr": Hyperparameter(float, 0.5), "max_iter": Hyperparameter(int, 3)},
        elementwise=False,
    ),
]


@pytest.mark.parametrize("spec", NON_ELEMENTWISE, ids=lambda spec: spec.name)
def test_non_elementwise_optimizers_train_one_network_at_a_time(spec):
    """One optimizer per network: "per_network" is the plain way, bit for bit; the default,
    "per_network_stacked", steps each network's optimizer on the stack's gradients (equal to the
    plain way to float32 rounding); an optimizer whose step needs a closure (LBFGS, undeclared)
    shows that once built, and the default then trains it on "per_network"."""
    module, (x, y) = paper_like_mlp(), data()
    assert choose_path(module, spec) == "per_network_stacked"
    count, epochs = 3, 2
    parameters, buffers = initial_parameters(module, KAIMING, 5, range(count), "cpu")
    orders = round_orders(5, range(count), N_TRAIN, epochs, "independent")
    hyperparameters = dict(spec.defaults)
    trained, _ = train_networks(module, x, y, spec, hyperparameters, parameters, buffers, orders, 2)
    plain, _ = train_networks(
        module, x, y, spec, hyperparameters, parameters, buffers, orders, 2, path="per_network"
    )
    for k in range(count):
        reference = train_plain(module, parameters, k, x, y, orders, 2, spec, hyperparameters)
        for name, value in reference.items():
            assert torch.equal(plain[name][k], value)
            if spec.name == "lbfgs":
                assert torch.equal(trained[name][k], value)
            else:
                torch.testing.assert_close(trained[name][k], value, rtol=1e-4, atol=1e-6)
    for path in ("mlp", "conv", "vmap"):
        with pytest.raises(ValueError, match="not elementwise"):
            train_networks(
                module, x, y, spec, hyperparameters, parameters, buffers, orders, 2, path=path
            )
    if spec.name == "lbfgs":
        with pytest.raises(ValueError, match="per_network_stacked' needs"):
            train_networks(
                module, x, y, spec, hyperparameters, parameters, buffers, orders, 2,
                path="per_network_stacked",
            )  # fmt: skip


def test_stacking_a_non_elementwise_optimizer_would_be_wrong():
    """Why the fallback exists: one normalized-gradient optimizer over a stack couples the networks."""
    module, (x, y) = paper_like_mlp(), data()
    wrongly_elementwise = OptimizerSpec(
        name="ngd", factory=NormalizedGradientDescent,
        hyperparameters={"lr": Hyperparameter(float, 0.05)}, elementwise=True,
    )
    parameters, buffers = initial_parameters(module, KAIMING, 5, range(3), "cpu")
    orders = round_orders(5, range(3), N_TRAIN, 1, "independent")
    stacked, _ = train_networks(
        module, x, y, wrongly_elementwise, {"lr": 0.05}, parameters, buffers, orders, 2
    )
    alone, _ = train_networks(
        module, x, y, wrongly_elementwise, {"lr": 0.05}, single(parameters, 0), {}, orders[:1], 2
    )
    assert not torch.equal(stacked["2.weight"][0], alone["2.weight"][0])


def test_sgd_reaches_zero_training_error_on_a_linearly_separable_set():
    module, (x, y) = paper_like_mlp(), separable_data()
    population = train_population(
        module, x, y, OPTIMIZERS["sgd"], dict(OPTIMIZERS["sgd"].defaults), KAIMING,
        TrainingSettings(epochs=20), target=6, seed=0, device="cpu",
    )  # fmt: skip
    assert population.size == 6 and not population.exhausted
    assert population.candidates_tried >= 6 and population.epochs == 20
    assert population.found_at.tolist() == sorted(population.found_at.tolist())
    assert population.parameters["2.weight"].shape == (6, 12, 16)
    assert not population.parameters["2.weight"].requires_grad
    module.eval()
    train_accuracy = accuracy(module, population.parameters, population.buffers, x, y)
    assert torch.all(train_accuracy == 1.0)


def small_population(target: int = 5, **settings):
    """Few epochs at a larger learning rate: some networks fit, some do not."""
    module, (x, y) = paper_like_mlp(), separable_data()
    calls = []
    population = train_population(
        module, x, y, OPTIMIZERS["sgd"], {**OPTIMIZERS["sgd"].defaults, "lr": 0.05}, KAIMING,
        TrainingSettings(epochs=3, **settings), target=target, seed=11, device="cpu",
        progress=lambda accepted, trained: calls.append((accepted, trained)),
    )  # fmt: skip
    return population, calls


def test_results_are_reproducible_from_the_seed():
    first, _ = small_population()
    second, _ = small_population()
    assert first.found_at.tolist() == second.found_at.tolist()
    assert first.candidates_tried == second.candidates_tried
    for name in first.parameters:
        assert torch.equal(first.parameters[name], second.parameters[name])
    module, (x, y) = paper_like_mlp(), separable_data()
    other = train_population(
        module, x, y, OPTIMIZERS["sgd"], {**OPTIMIZERS["sgd"].defaults, "lr": 0.05}, KAIMING,
        TrainingSettings(epochs=3), target=5, seed=12, device="cpu",
    )  # fmt: skip
    assert not torch.equal(other.parameters["2.weight"], first.parameters["2.weight"])


def test_independent_orders_make_the_population_independent_of_the_round_size():
    reference, calls = small_population(networks_per_round=2)
    assert calls == sorted(calls) and len(calls) >= 3  # one progress call per round of 2
    assert calls[-1][0] == reference.size
    for per_round in (1, 3, "auto"):
        population, _ = small_population(networks_per_round=per_round)
        assert population.found_at.tolist() == reference.found_at.tolist()
        assert population.candidates_tried == reference.candidates_tried
        for name in reference.parameters:
            assert torch.equal(population.parameters[name], reference.parameters[name])


def test_shared_orders_are_one_sequence_per_round_and_independent_orders_are_per_network():
    independent = round_orders(4, range(3, 6), N_TRAIN, 5, "independent")
    for k, attempt in enumerate(range(3, 6)):
        assert torch.equal(independent[k], network_orders(4, attempt, N_TRAIN, 5))
    assert not torch.equal(independent[0], independent[1])
    for epoch in independent[0]:  # a permutation per epoch, different epochs differ
        assert sorted(epoch.tolist()) == list(range(N_TRAIN))
    assert not torch.equal(independent[0, 0], independent[0, 1])
    shared = round_orders(4, range(3, 6), N_TRAIN, 5, "shared")
    assert all(torch.equal(shared[k], shared_orders(4, 3, N_TRAIN, 5)) for k in range(3))
    assert not torch.equal(shared_orders(4, 3, N_TRAIN, 5), shared_orders(4, 6, N_TRAIN, 5))


def test_shared_population_trains_every_network_of_a_round_on_the_rounds_sequence():
    population, _ = small_population(batch_order="shared", networks_per_round=3)
    module, (x, y) = paper_like_mlp(), separable_data()
    hyperparameters = {**OPTIMIZERS["sgd"].defaults, "lr": 0.05}
    for j, attempt in enumerate(population.found_at.tolist()):
        first_of_round = attempt - attempt % 3
        parameters, _ = initial_parameters(module, KAIMING, 11, [attempt], "cpu")
        orders = shared_orders(11, first_of_round, N_TRAIN, 3).unsqueeze(0)
        trained, _ = train_networks(
            module, x, y, OPTIMIZERS["sgd"], hyperparameters, parameters, {}, orders, 2
        )
        for name, value in trained.items():
            assert torch.equal(population.parameters[name][j], value[0])
    settings = TrainingSettings(epochs=3, batch_order="shared", networks_per_round=3)
    attempts = population.found_at.tolist()
    again, _ = regenerate(
        module, x, y, OPTIMIZERS["sgd"], hyperparameters, KAIMING, settings, 11, attempts, "cpu",
        round_starts=[a - a % 3 for a in attempts],
    )  # fmt: skip
    for name, value in again.items():
        assert torch.equal(population.parameters[name], value)
    with pytest.raises(ValueError, match="round_starts"):
        regenerate(
            module, x, y, OPTIMIZERS["sgd"], hyperparameters, KAIMING, settings, 11, attempts, "cpu"
        )


def test_every_network_is_regenerable_from_the_seed_and_its_attempt_index():
    population, _ = small_population(networks_per_round=4)
    module, (x, y) = paper_like_mlp(), separable_data()
    hyperparameters = {**OPTIMIZERS["sgd"].defaults, "lr": 0.05}
    for j, attempt in enumerate(population.found_at.tolist()):
        parameters, _ = initial_parameters(module, KAIMING, 11, [attempt], "cpu")
        orders = network_orders(11, attempt, N_TRAIN, 3).unsqueeze(0)
        trained, _ = train_networks(
            module, x, y, OPTIMIZERS["sgd"], hyperparameters, parameters, {}, orders, 2
        )
        for name, value in trained.items():
            assert torch.equal(population.parameters[name][j], value[0])
    again, _ = regenerate(
        module, x, y, OPTIMIZERS["sgd"], hyperparameters, KAIMING, TrainingSettings(epochs=3), 11,
        population.found_at, "cpu",
    )  # fmt: skip
    for name, value in again.items():
        assert torch.equal(population.parameters[name], value)


def test_initial_parameters_follow_the_prior_from_per_network_seeds():
    module = paper_like_mlp(bias=True)
    parameters, _ = initial_parameters(module, KAIMING, 9, range(2, 5), "cpu")
    again, _ = initial_parameters(module, KAIMING, 9, [3], "cpu")
    assert torch.equal(parameters["2.weight"][1], again["2.weight"][0])
    assert torch.all(parameters["2.bias"] == 0)
    bound = kaiming_uniform_bound(16)
    assert parameters["2.weight"].abs().max() <= bound
    assert init_seed(9, 3) == derive_seed(9, "init", 3) != init_seed(9, 4) != init_seed(10, 3)


def test_an_impossible_task_exhausts_the_budget():
    module = paper_like_mlp()
    x = torch.zeros(4, 1, 8, 8)  # identical inputs with different labels: nothing can fit
    y = torch.tensor([0, 1, 0, 1])
    calls = []
    population = train_population(
        module, x, y, OPTIMIZERS["sgd"], dict(OPTIMIZERS["sgd"].defaults), KAIMING,
        TrainingSettings(epochs=1, networks_per_round=3, max_networks=7), target=2, seed=0,
        device="cpu", progress=lambda accepted, trained: calls.append((accepted, trained)),
    )  # fmt: skip
    assert population.exhausted and population.size == 0
    assert population.candidates_tried == 7
    assert calls == [(0, 3), (0, 6), (0, 7)]  # rounds of networks_per_round, the budget's rest
    assert population.parameters["2.weight"].shape == (0, 12, 16)


def test_the_default_budget_is_ten_networks_per_target():
    module = paper_like_mlp()
    x, y = torch.zeros(4, 1, 8, 8), torch.tensor([0, 1, 0, 1])
    population = train_population(
        module, x, y, OPTIMIZERS["sgd"], dict(OPTIMIZERS["sgd"].defaults), KAIMING,
        TrainingSettings(epochs=1), target=1, seed=0, device="cpu",
    )  # fmt: skip
    assert population.exhausted and population.candidates_tried == 10


def test_a_target_of_zero_trains_nothing():
    module, (x, y) = paper_like_mlp(), separable_data()
    population = train_population(
        module, x, y, OPTIMIZERS["sgd"], dict(OPTIMIZERS["sgd"].defaults), KAIMING,
        TrainingSettings(), target=0, seed=0, device="cpu",
    )  # fmt: skip
    assert population.size == 0 and population.candidates_tried == 0 and not population.exhausted


def test_partial_last_batch_like_a_dataloader_without_drop_last():
    orders = torch.arange(10).view(1, 2, 5)  # 1 network, 2 epochs, 5 points
    steps = batch_indices(orders, 2)
    assert [s.tolist() for s in steps] == [[[0, 1]], [[2, 3]], [[4]], [[5, 6]], [[7, 8]], [[9]]]


def test_modules_with_batchnorm_train_through_vmap_and_keep_their_statistics():
    module = nn.Sequential(
        nn.Conv2d(1, 3, 3, bias=False), nn.BatchNorm2d(3), nn.ReLU(),
        nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(3, 2, bias=False),
    )  # fmt: skip
    x, y = separable_data(8)
    spec = OPTIMIZERS["sgd"]
    assert choose_path(module, spec) == "vmap"
    parameters, buffers = initial_parameters(module, KAIMING, 0, range(3), "cpu")
    orders = round_orders(0, range(3), 8, 2, "independent")
    trained, state = train_networks(
        module, x, y, spec, dict(spec.defaults), parameters, buffers, orders, 2
    )
    assert state["1.running_mean"].shape == (3, 3)
    assert not torch.equal(state["1.running_mean"], buffers["1.running_mean"])
    assert torch.all(state["1.num_batches_tracked"] == 8)
    for k in range(3):  # each network's running statistics are its own
        network = copy.deepcopy(module).train()
        with torch.no_grad():
            for name, value in network.named_parameters():
                value.copy_(parameters[name][k])
        optimizer = spec.factory(network.parameters(), **spec.defaults)
        for indices in batch_indices(orders[k : k + 1], 2):
            optimizer.zero_grad()
            F.cross_entropy(network(x[indices[0]]), y[indices[0]]).backward()
            optimizer.step()
        torch.testing.assert_close(state["1.running_mean"][k], network[1].running_mean)
        torch.testing.assert_close(trained["0.weight"][k], network[0].weight.detach())


def test_settings_are_validated():
    with pytest.raises(ValueError, match="batch_order"):
        TrainingSettings(batch_order="random")
    with pytest.raises(ValueError, match="networks_per_round"):
        TrainingSettings(networks_per_round=0)
    with pytest.raises(ValueError, match="batch_size"):
        TrainingSettings(batch_size=0)


def test_the_thread_count_does_not_change_the_results():
    """The torch thread count, and the engine's worker threads (one sub-stack each on the mlp
    path), do not change a network."""
    module, (x, y) = large_product_mlp(), data()
    plan = plan_mlp(module)
    parameters, buffers = initial_parameters(module, KAIMING, 2, range(6), "cpu")
    orders = round_orders(2, range(6), N_TRAIN, 2, "independent")
    steps = batch_indices(orders, 2)
    spec = OPTIMIZERS["adam"]

    def make_optimizer(tensors):
        return spec.factory(tensors, **spec.defaults)

    threads = torch.get_num_threads()
    results = []  # 2 threads even on a 1-core machine: the code path is what matters
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            results.append(
                train_stacked_mlp(plan, input_features(plan, x), y, parameters, steps, make_optimizer)
            )
    finally:
        torch.set_num_threads(threads)
    for workers in (1, 2, 4):
        trained, _ = train_networks(
            module, x, y, spec, dict(spec.defaults), parameters, buffers, orders, 2,
            workers=workers,
        )  # fmt: skip
        results.append(trained)
    for result in results[1:]:
        for name in results[0]:
            assert torch.equal(results[0][name], result[name])


@pytest.mark.parametrize(
    "shape, width, count",
    [((1, 28, 28), "1/6", 100), ((1, 28, 28), 1, 40), ((3, 32, 32), "3/6", 64)],
)
def test_vmap_rounds_split_by_size_alone_give_the_whole_rounds_numbers(shape, width, count):
    """The vmap path's convolutions run grouped over the stack and oneDNN chooses its algorithm by
    the group count (a LeNet alone gets other bits than in a stack of 8), so a round is split by
    its size only (engine/parts.py); those parts give the bits of the whole round, whatever the
    number of workers."""
    from benchsuite.architectures.lenet import build_lenet
    from benchsuite.engine import training
    from benchsuite.engine.batches import steps_per_epoch
    from benchsuite.engine.parts import round_parts

    module = build_lenet(shape, width, bias=True)
    assert len(round_parts("vmap", module, count, 2)) == 2
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, *shape, generator=generator), torch.arange(8) % 2
    parameters, buffers = initial_parameters(module, KAIMING, 0, range(count), "cpu")
    orders = round_orders(0, range(count), 8, 1, "independent")
    spec = OPTIMIZERS["adam"]
    steps = batch_indices(orders, 2)
    make_optimizer, make_stepper = training._host(
        spec, dict(spec.defaults), count, None, None, len(steps), steps_per_epoch(8, 2)
    )
    whole, _ = training._train_vmap(  # the round as one stack, as before the split
        module.train(), x, y, parameters, buffers, steps, make_optimizer, make_stepper
    )
    for workers in (1, 2, 3):
        split, _ = train_networks(
            module, x, y, spec, dict(spec.defaults), parameters, buffers, orders, 2, path="vmap",
            workers=workers,
        )  # fmt: skip
        assert all(torch.equal(split[name], whole[name]) for name in whole)


def test_round_sizes_follow_the_acceptance_rate_and_split_evenly():
    from benchsuite.engine.training import _round_size

    assert _round_size(cap=51, target=100, accepted=0, trained=0, budget=1000) == 50  # 50 + 50
    assert _round_size(cap=51, target=100, accepted=98, trained=100, budget=1000) == 3
    assert _round_size(cap=51, target=100, accepted=0, trained=51, budget=1000) == 51
    assert _round_size(cap=51, target=100, accepted=0, trained=990, budget=1000) == 10


def test_sequentials_the_mlp_path_cannot_read_train_through_vmap():
    """A Linear over image rows before the Flatten is not an MLP plan: the general path trains it."""
    module = nn.Sequential(nn.Linear(8, 4, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(32, 2))
    assert plan_mlp(module) is None and choose_path(module, OPTIMIZERS["sgd"]) == "vmap"
    x, y = data(8)
    spec = OPTIMIZERS["sgd"]
    parameters, buffers = initial_parameters(module, KAIMING, 0, range(2), "cpu")
    orders = round_orders(0, range(2), 8, 1, "independent")
    automatic, _ = train_networks(
        module, x, y, spec, dict(spec.defaults), parameters, buffers, orders, 2
    )
    vmapped, _ = train_networks(
        module, x, y, spec, dict(spec.defaults), parameters, buffers, orders, 2, path="vmap"
    )
    for name in automatic:
        assert torch.equal(automatic[name], vmapped[name])


def test_training_leaves_the_callers_thread_count_alone():
    module, (x, y) = paper_like_mlp(), data()
    parameters, buffers = initial_parameters(module, KAIMING, 0, range(4), "cpu")
    orders = round_orders(0, range(4), N_TRAIN, 30, "independent")  # long enough for a probe
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        spec = OPTIMIZERS["sgd"]
        train_networks(module, x, y, spec, dict(spec.defaults), parameters, buffers, orders, 2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_populations_trained_together_equal_populations_trained_alone():
    """train_populations stacks the rounds of populations that differ in training set and seed;
    every population (networks, attempts, candidates tried) equals the one trained alone."""
    from benchsuite.engine.training import PopulationRequest, train_populations

    module = paper_like_mlp(bias=True)
    spec = OPTIMIZERS["adam"]
    hyperparameters = {**spec.defaults, "lr": 0.01}
    settings = TrainingSettings(epochs=3)
    sets = [separable_data(), data(seed=1), data(seed=2), separable_data()]
    requests = [
        PopulationRequest(
            copy.deepcopy(module), x, y, spec, hyperparameters, KAIMING, settings, target=4,
            seed=20 + i, device="cpu",
        )  # fmt: skip
        for i, (x, y) in enumerate(sets)
    ]
    together = train_populations(requests)
    for request, population in zip(requests, together):
        alone = train_population(
            request.module, request.x_train, request.y_train, spec, hyperparameters, KAIMING,
            settings, request.target, request.seed, "cpu",
        )  # fmt: skip
        assert population.found_at.tolist() == alone.found_at.tolist()
        assert population.candidates_tried == alone.candidates_tried
        assert population.exhausted == alone.exhausted
        for name, value in alone.parameters.items():
            assert torch.equal(population.parameters[name], value)
    assert any(p.candidates_tried > p.size for p in together)  # some rounds rejected networks


def test_populations_that_cannot_share_a_stack_train_alone():
    from benchsuite.engine.training import PopulationRequest, train_populations

    x, y = separable_data()
    spec = OPTIMIZERS["sgd"]
    requests = [
        PopulationRequest(
            module, x, y, spec, dict(spec.defaults), KAIMING, TrainingSettings(epochs=2),
            target=2, seed=3, device="cpu",
        )  # fmt: skip
        for module in (paper_like_mlp(), large_product_mlp())
    ]
    for request, population in zip(requests, train_populations(requests)):
        alone = train_population(
            request.module, x, y, spec, dict(spec.defaults), KAIMING, request.settings, 2, 3, "cpu"
        )
        for name, value in alone.parameters.items():
            assert torch.equal(population.parameters[name], value)


@pytest.mark.parametrize(
    "optimizer_class, options",
    [
        (torch.optim.SGD, {}),
        (torch.optim.SGD, {"momentum": 0.9, "nesterov": True, "weight_decay": 1e-3}),
        (torch.optim.SGD, {"momentum": 0.5, "dampening": 0.1}),
        (torch.optim.Adam, {}),
        (torch.optim.Adam, {"weight_decay": 1e-2, "eps": 1e-3, "betas": (0.5, 0.6)}),
        (torch.optim.Adam, {"eps": 0.0}),
        (torch.optim.AdamW, {}),
    ],
)
@pytest.mark.parametrize("block", [1000, 1 << 20])
def test_direct_optimizer_steps_equal_torch_optim_bit_for_bit(
    optimizer_class, options, block, monkeypatch
):
    """Zeros (dead units), tiny and denormal gradients, -0.0 and a late NaN included; in blocks
    (the last one partial) and whole."""
    from benchsuite.engine import stacked_optim
    from benchsuite.engine.stacked_optim import direct_optimizer

    monkeypatch.setattr(stacked_optim, "BLOCK_ELEMENTS", block)

    generator = torch.Generator().manual_seed(0)
    n = 4500
    start = torch.randn(n, generator=generator)
    plain, direct = start.clone(), start.clone()
    plain.grad, direct.grad = torch.zeros(n), torch.zeros(n)
    reference = optimizer_class([plain], lr=1e-3, **options)
    stepper = direct_optimizer(optimizer_class([direct], lr=1e-3, **options))
    assert stepper is not None
    scales = torch.logspace(-42, 0, n)[torch.randperm(n, generator=generator)]
    for step in range(60):
        gradient = torch.randn(n, generator=generator) * scales
        gradient[torch.rand(n, generator=generator) < 0.4] = 0.0
        gradient[:10] = -0.0
        gradient[10] = float("nan") if step == 59 else 1e-44
        plain.grad.copy_(gradient)
        direct.grad.copy_(gradient)
        reference.step()
        stepper.step()
        assert torch.equal(plain.view(torch.int32), direct.view(torch.int32)), step


def test_the_square_root_floor_never_changes_a_denominator():
    from benchsuite.engine.stacked_optim import sqrt_floor

    for eps in (1e-8, 1e-3, 1e-12):
        for divisor in (0.0316, 0.5, 1.0):
            floor = sqrt_floor(eps, divisor, torch.float32)
            assert floor > 0
            small = torch.tensor([0.0, 1e-45, floor / 3, floor])
            exact = (small.sqrt() / divisor).add_(eps)
            raised = (small.clamp_min(floor).sqrt() / divisor).add_(eps)
            assert torch.equal(exact, raised) and torch.all(exact == torch.tensor(eps))
    assert sqrt_floor(0.0, 0.5, torch.float32) == 0.0


def test_the_per_step_reference_path_gives_the_same_networks():
    from benchsuite.engine.training import per_step_path

    module, (x, y) = paper_like_mlp(bias=True), data(n=7)
    spec = OPTIMIZERS["adam"]
    parameters, buffers = initial_parameters(module, KAIMING, 4, range(5), "cpu")
    orders = round_orders(4, range(5), 7, 3, "independent")
    fast, _ = train_networks(module, x, y, spec, dict(spec.defaults), parameters, buffers, orders, 2)
    with per_step_path():
        slow, _ = train_networks(
            module, x, y, spec, dict(spec.defaults), parameters, buffers, orders, 2
        )
    for name in fast:
        assert torch.equal(fast[name], slow[name])


def test_direct_steppers_are_built_from_the_specs_without_torch_optim():
    from benchsuite.engine.stacked_optim import DirectAdam, DirectSGD, direct_optimizer_for

    param = torch.zeros(10)
    param.grad = torch.zeros(10)
    kinds = {"sgd": DirectSGD, "adam": DirectAdam, "adamw": DirectAdam}
    for name, spec in OPTIMIZERS.items():
        stepper = direct_optimizer_for(spec.factory, dict(spec.defaults), param)
        assert type(stepper) is kinds[name] if name in kinds else stepper is None
    adamw = direct_optimizer_for(OPTIMIZERS["adamw"].factory, OPTIMIZERS["adamw"].defaults, param)
    assert adamw.decoupled and adamw.weight_decay == 0.01
    with pytest.raises(ValueError, match="learning rate"):
        direct_optimizer_for(OPTIMIZERS["sgd"].factory, {"lr": -1.0}, param)
    with pytest.raises(ValueError, match="Nesterov"):
        direct_optimizer_for(OPTIMIZERS["sgd"].factory, {"nesterov": True}, param)
    assert direct_optimizer_for(torch.optim.SGD, {"lr": 0.1, "amsgrad": True}, param) is None


def test_mlp_rounds_go_split_or_whole_by_measured_speed():
    """Both ways give the same bits (test_the_thread_count_does_not_change_the_results); the
    choice tries each, keeps the faster per network-step and tries the other now and then."""
    from benchsuite.engine.parts import SplitChoice

    choice, key = SplitChoice(), ("paper", 2)
    assert choice.split(key) is True
    choice.record(key, True, seconds=2.0, network_steps=100)
    assert choice.split(key) is False
    choice.record(key, False, seconds=1.0, network_steps=100)  # whole is faster
    picks = [choice.split(key) for _ in range(14)]  # rounds 2..15
    assert picks.count(True) == 1 and picks[6] is True  # round 8 re-checks the slower way
    choice.record(key, True, seconds=0.5, network_steps=100)  # the load went: split is faster
    assert [choice.split(key) for _ in range(2)] == [False, True]  # round 16 re-checks, then split
