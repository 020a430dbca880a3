"""The hand-written "conv" training path (engine/stacked_conv.py): what it guarantees.

- the vmap path's numbers bit for bit, stack for stack (the same grouped convolutions, each other
  kernel computing every network by itself), hence every population as before;
- its sub-stacks by round size alone, so the worker count changes no bit;
- the plan only for what it can compute; everything else keeps the vmap path.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from benchsuite.architectures.lenet import build_lenet
from benchsuite.builtins.optimizers import benchsuite_optimizers
from benchsuite.engine.batches import round_orders
from benchsuite.engine.stacked_conv import plan_conv
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


@pytest.mark.parametrize(
    "shape, width, depth, bias, count",
    [
        ((1, 28, 28), "1/6", None, True, 12),
        ((1, 28, 28), 1, None, False, 8),
        ((3, 32, 32), "2/6", "2c-2f", True, 10),
        ((1, 28, 28), "2/6", "1c-1f", True, 3),
    ],
)
@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_the_conv_path_gives_the_vmap_paths_numbers_bit_for_bit(shape, width, depth, bias, count, name):
    module = build_lenet(shape, width, depth=depth or "2c-3f", bias=bias)
    assert choose_path(module, OPTIMIZERS[name]) == "conv"
    hyperparameters = MOMENTUM if name == "sgd" else dict(OPTIMIZERS[name].defaults)
    conv, initial = trained(module, shape, name, hyperparameters, count, "conv")
    vmap, _ = trained(module, shape, name, hyperparameters, count, "vmap")
    for key in vmap:
        assert not torch.equal(conv[key], initial[key]) or key.endswith("bias")
        assert torch.equal(conv[key], vmap[key]), key


def test_split_rounds_equal_the_vmap_path_whatever_the_worker_count():
    """40 LeNets of width 1: two sub-stacks of 20 (engine/parts.py), as on the vmap path."""
    shape, module = (1, 28, 28), build_lenet((1, 28, 28), 1, bias=True)
    vmap, _ = trained(module, shape, "adam", dict(OPTIMIZERS["adam"].defaults), 40, "vmap", 1, 1)
    for workers in (1, 2):
        conv, _ = trained(
            module, shape, "adam", dict(OPTIMIZERS["adam"].defaults), 40, "conv", workers, 1
        )
        assert all(torch.equal(conv[key], vmap[key]) for key in vmap)


def test_a_population_trained_on_the_conv_path_accepts_the_networks_of_the_vmap_path(
    monkeypatch,
):
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
        assert torch.equal(conv.parameters[key], vmap.parameters[key])


def test_only_what_the_conv_path_computes_is_planned():
    conv = [nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten()]
    assert plan_conv(nn.Sequential(*conv, nn.Linear(2 * 3 * 3, 2))) is not None
    assert plan_conv(nn.Sequential(*conv, nn.Linear(18, 4), nn.ReLU(), nn.Linear(4, 2))) is not None
    for module in (
        nn.Sequential(nn.Conv2d(1, 2, 3, groups=1, padding="same"), nn.Flatten(), nn.Linear(128, 2)),
        nn.Sequential(nn.Conv2d(2, 2, 3, groups=2), nn.Flatten(), nn.Linear(72, 2)),
        nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(72, 2)),
        nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(72, 2)),
        nn.Sequential(nn.Flatten(), nn.Linear(64, 2)),  # the mlp path's
        nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten()),  # no Linear output
    ):
        assert plan_conv(module) is None
