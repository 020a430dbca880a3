"""The hand-written "conv" training path (engine/stacked_conv.py): what it guarantees.

- a network trained in a stack equals it trained alone, bit for bit (convolutions as patches x
  kernels in bmm); the worker count changes no bit;
- against the vmap path: equal to float32 rounding, the same networks accepted (fixture);
  its grouped formulation (strided or padded convolutions) gives vmap's numbers bit for bit;
- the plan only for what it can compute; everything else keeps the vmap path.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from benchsuite.architectures.lenet import build_lenet
from benchsuite.builtins.optimizers import benchsuite_optimizers
from benchsuite.engine.batches import round_orders
from benchsuite.engine.stacked_conv import plan_conv, tiled_max_pool
from benchsuite.engine.training import (
    TrainingSettings,
    choose_path,
    initial_parameters,
    train_networks,
    train_population,
)
from benchsuite.records import PriorSpec, kaiming_uniform_bound

OPTIMIZERS = {spec.name: spec for spec in benchsuite_optimizers()}
KAIMING = PriorSpec(name="kaiming-uniform", family="uniform", scale=kaiming_uniform_bound)
MOMENTUM = {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3}


def images(shape, n=9, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=generator), torch.arange(n) % 2


def trained(module, shape, name, hyperparameters, count, path, workers=1, epochs=2, n=9):
    x, y = images(shape, n)
    spec = OPTIMIZERS[name]
    parameters, buffers = initial_parameters(module, KAIMING, 5, range(count), "cpu")
    orders = round_orders(5, range(count), n, epochs, "independent")
    result, _ = train_networks(
        module, x, y, spec, hyperparameters, parameters, buffers, orders, 2, path=path,
        workers=workers,
    )  # fmt: skip
    return result, parameters


CASES = [
    ((1, 28, 28), "1/6", None, True, 6),
    ((1, 28, 28), 1, None, False, 4),
    ((3, 32, 32), "2/6", "2c-2f", True, 5),
    ((1, 28, 28), "2/6", "1c-1f", True, 3),
]


def single(stacked: dict, k: int) -> dict:
    return {name: value[k : k + 1] for name, value in stacked.items()}


@pytest.mark.parametrize("shape, width, depth, bias, count", CASES)
@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_a_network_trained_in_a_stack_equals_it_trained_alone(
    shape, width, depth, bias, count, name
):
    """Patches x kernels (bmm), pools, ReLUs and the optimizer compute each network by itself."""
    module = build_lenet(shape, width, depth=depth or "2c-3f", bias=bias)
    assert choose_path(module, OPTIMIZERS[name]) == "conv" and plan_conv(module).patches
    hyperparameters = MOMENTUM if name == "sgd" else dict(OPTIMIZERS[name].defaults)
    x, y = images(shape)
    spec = OPTIMIZERS[name]
    parameters, buffers = initial_parameters(module, KAIMING, 5, range(count), "cpu")
    orders = round_orders(5, range(count), 9, 2, "independent")
    stacked, _ = train_networks(
        module, x, y, spec, hyperparameters, parameters, buffers, orders, 2, path="conv"
    )
    vmap, _ = train_networks(
        module, x, y, spec, hyperparameters, parameters, buffers, orders, 2, path="vmap"
    )
    for k in range(count):
        alone, _ = train_networks(
            module, x, y, spec, hyperparameters, single(parameters, k), {}, orders[k : k + 1], 2,
            path="conv",
        )  # fmt: skip
        for key in alone:
            assert not torch.equal(alone[key][0], parameters[key][k]) or key.endswith("bias")
            assert torch.equal(stacked[key][k], alone[key][0]), (k, key)
            torch.testing.assert_close(stacked[key][k], vmap[key][k], rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("shape, width, depth, bias, count", CASES[:3])
def test_grouped_convolutions_give_the_vmap_paths_numbers_bit_for_bit(
    shape, width, depth, bias, count, monkeypatch
):
    """The grouped formulation (unit strides off, or PATCHES False) is vmap's batching rule."""
    from benchsuite.engine import stacked_conv

    monkeypatch.setattr(stacked_conv, "PATCHES", False)
    module = build_lenet(shape, width, depth=depth or "2c-3f", bias=bias)
    assert not plan_conv(module).patches
    conv, _ = trained(module, shape, "sgd", MOMENTUM, count, "conv")
    vmap, _ = trained(module, shape, "sgd", MOMENTUM, count, "vmap")
    assert all(torch.equal(conv[key], vmap[key]) for key in vmap)


def test_the_worker_count_changes_no_bit():
    shape, module = (1, 28, 28), build_lenet((1, 28, 28), 1, bias=True)
    runs = [
        trained(module, shape, "adam", dict(OPTIMIZERS["adam"].defaults), 40, "conv", w, 1)[0]
        for w in (1, 2, 3)
    ]
    for run in runs[1:]:
        assert all(torch.equal(run[key], runs[0][key]) for key in runs[0])


def test_a_population_on_the_conv_path_accepts_the_networks_the_vmap_path_accepts(monkeypatch):
    from benchsuite.engine import training

    module = build_lenet((1, 28, 28), "1/6", bias=True)
    x, y = images((1, 28, 28), n=8, seed=3)
    spec = OPTIMIZERS["sgd"]
    settings = TrainingSettings(epochs=10, max_networks=24)

    def population():
        return train_population(
            module, x, y, spec, dict(spec.defaults), KAIMING, settings, 6, 11, "cpu"
        )

    conv = population()
    monkeypatch.setattr(training, "choose_path", lambda *_: "vmap")
    vmap = population()
    assert conv.found_at.tolist() == vmap.found_at.tolist()
    assert conv.found_at.numel() > 0
    for key in vmap.parameters:
        torch.testing.assert_close(conv.parameters[key], vmap.parameters[key], rtol=1e-4, atol=1e-5)


def test_only_what_the_conv_path_computes_is_planned():
    conv = [nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten()]
    assert plan_conv(nn.Sequential(*conv, nn.Linear(2 * 3 * 3, 2))) is not None
    assert plan_conv(nn.Sequential(*conv, nn.Linear(18, 4), nn.ReLU(), nn.Linear(4, 2))) is not None
    for module in (
        nn.Sequential(
            nn.Conv2d(1, 2, 3, groups=1, padding="same"), nn.Flatten(), nn.Linear(128, 2)
        ),
        nn.Sequential(nn.Conv2d(2, 2, 3, groups=2), nn.Flatten(), nn.Linear(72, 2)),
        nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(72, 2)),
        nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(72, 2)),
        nn.Sequential(nn.Flatten(), nn.Linear(64, 2)),  # the mlp path's
        nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten()),  # no Linear output
    ):
        assert plan_conv(module) is None


@pytest.mark.parametrize("shape", [(3, 2, 2, 24, 24), (2, 3, 1, 9, 7), (4, 1, 2, 8, 8)])
def test_the_tiled_max_pool_is_max_pool2d_ties_included(shape):
    """Values, indices and gradient of MaxPool2d(2) (first maximum of the window wins), on
    small-integer inputs full of ties and odd sides (the last row or column is dropped)."""
    generator = torch.Generator().manual_seed(sum(shape))
    x = torch.randint(-2, 3, shape, generator=generator).float()
    pooled, indices = tiled_max_pool(x)
    planes = x.flatten(0, 1).requires_grad_()
    expected, expected_indices = F.max_pool2d(planes, 2, return_indices=True)
    assert torch.equal(pooled.flatten(0, 1), expected)
    assert torch.equal(indices.flatten(0, 1), expected_indices)
    grad = torch.randn(expected.shape, generator=generator)
    expected.backward(grad)
    gradient = torch.ops.aten.max_pool2d_with_indices_backward(
        grad, planes.detach(), [2, 2], [2, 2], [0, 0], [1, 1], False, indices.flatten(0, 1)
    )
    assert torch.equal(gradient, planes.grad)


def test_other_max_pools_keep_max_pool2d_and_stay_exact():
    """A MaxPool2d that does not tile 2x2 runs max_pool2d itself (ReLU moved after it too)."""
    module = nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(3, 2), nn.Flatten(), nn.Linear(32, 2)
    )
    plan = plan_conv(module)
    assert plan.patches and [op.kind for op in plan.ops][:3] == ["conv", "pool", "relu"]
    shape, count = (1, 12, 12), 4
    stacked, parameters = trained(module, shape, "sgd", MOMENTUM, count, "conv")
    vmap, _ = trained(module, shape, "sgd", MOMENTUM, count, "vmap")
    x, y = images(shape)
    orders = round_orders(5, range(count), 9, 2, "independent")
    for k in range(count):
        alone, _ = train_networks(
            module, x, y, OPTIMIZERS["sgd"], MOMENTUM, single(parameters, k), {},
            orders[k : k + 1], 2, path="conv",
        )  # fmt: skip
        for key in alone:
            assert torch.equal(stacked[key][k], alone[key][0]), (k, key)
            torch.testing.assert_close(stacked[key][k], vmap[key][k], rtol=1e-3, atol=1e-5)
