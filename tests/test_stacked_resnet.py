"""The hand-written "resnet" training path (engine/stacked_resnet.py): what it guarantees.

- a network trained in a stack equals it trained alone, bit for bit: parameters and BatchNorm
  buffers (running statistics, num_batches_tracked), at every depth, widths, K, SGD with
  momentum and weight decay, Adam; the worker count changes no bit;
- against the vmap path: equal to float32 rounding, buffers included;
  (the first test runs the torch formulation, BENCHSUITE_NATIVE=0; convnet.c's kernel, the
  default where it is built, has its own in tests/test_resnet_kernel.py; the rest run both ways
  as the machine has them);
- the running statistics follow StackableBatchNorm2d's rules (momentum, cumulative average);
- the plan only for what it can compute; everything else keeps its path.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from benchsuite.architectures.lenet import build_lenet
from benchsuite.architectures.resnet4 import build_resnet4
from benchsuite.batchnorm import StackableBatchNorm2d
from benchsuite.builtins.optimizers import benchsuite_optimizers
from benchsuite.engine import native
from benchsuite.engine.batches import round_orders
from benchsuite.engine.stacked_resnet import plan_resnet, tiling_pool_backward, tiling_pool_forward
from benchsuite.engine.training import choose_path, initial_parameters, train_networks
from benchsuite.records import PriorSpec, kaiming_uniform_bound

OPTIMIZERS = {spec.name: spec for spec in benchsuite_optimizers()}
KAIMING = PriorSpec(name="kaiming-uniform", family="uniform", scale=kaiming_uniform_bound)
MOMENTUM = {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3}
# Against the vmap path, (rtol, atol): Adam's step is about lr (1e-3) whatever the gradient's
# size, so a rounding change that flips a near-zero gradient moves that weight by up to lr; seen:
# one weight in 10,368 off by 2e-4 after 2 epochs on the Xeon, one in 20,736 by 6.7e-4 on the
# EPYC; two steps' worth bounds it. SGD's steps scale with the gradient.
TOLERANCE = {"sgd": (1e-3, 1e-5), "adam": (1e-3, 2e-3)}


def images(shape, n=9, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=generator), torch.arange(n) % 2


def single(stacked: dict, k: int) -> dict:
    return {name: value[k : k + 1] for name, value in stacked.items()}


def run(module, shape, name, count, path, workers=1, epochs=2, n=9):
    x, y = images(shape, n)
    spec = OPTIMIZERS[name]
    hyperparameters = MOMENTUM if name == "sgd" else dict(spec.defaults)
    parameters, buffers = initial_parameters(module, KAIMING, 5, range(count), "cpu")
    orders = round_orders(5, range(count), n, epochs, "independent")

    def train(p, b, o, path=path):
        return train_networks(
            module, x, y, spec, hyperparameters, p, b, o, 2, path=path, workers=workers
        )

    return train, parameters, buffers, orders


CASES = [
    ((1, 28, 28), "1/2", "full", 5),
    ((1, 28, 28), 1, "layer2-3", 3),
    ((3, 32, 32), "1/2", "layer3", 4),
    ((1, 28, 28), "1/6", "full", 2),
]


@pytest.mark.parametrize("shape, width, depth, count", CASES)
@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_a_network_trained_in_a_stack_equals_it_trained_alone(shape, width, depth, count, name):
    """bmm, per-network reductions and elementwise kernels compute each network by itself."""
    module = build_resnet4(shape, width, depth=depth)
    assert choose_path(module, OPTIMIZERS[name]) == "resnet"
    train, parameters, buffers, orders = run(module, shape, name, count, "resnet")
    with native.switched_off():
        stacked, stacked_buffers = train(parameters, buffers, orders)
        singles = [
            train(single(parameters, k), single(buffers, k), orders[k : k + 1]) for k in range(count)
        ]
    vmap, vmap_buffers = train(parameters, buffers, orders, path="vmap")
    rtol, atol = TOLERANCE[name]
    for k, (alone, alone_buffers) in enumerate(singles):
        for key in alone:
            assert not torch.equal(alone[key][0], parameters[key][k])
            assert torch.equal(stacked[key][k], alone[key][0]), (k, key)
            torch.testing.assert_close(stacked[key][k], vmap[key][k], rtol=rtol, atol=atol)
        for key in alone_buffers:
            assert not torch.equal(alone_buffers[key][0], buffers[key][k])
            assert torch.equal(stacked_buffers[key][k], alone_buffers[key][0]), (k, key)
            torch.testing.assert_close(
                stacked_buffers[key][k], vmap_buffers[key][k], rtol=rtol, atol=atol
            )
    # the inputs are not modified
    fresh, fresh_buffers = initial_parameters(module, KAIMING, 5, range(count), "cpu")
    assert all(torch.equal(parameters[key], fresh[key]) for key in fresh)
    assert all(torch.equal(buffers[key], fresh_buffers[key]) for key in fresh_buffers)


def test_the_worker_count_changes_no_bit():
    shape, module = (1, 28, 28), build_resnet4((1, 28, 28), "1/2")
    runs = []
    for workers in (1, 2, 3):
        train, parameters, buffers, orders = run(module, shape, "adam", 40, "resnet", workers, 1)
        runs.append(train(parameters, buffers, orders))
    for trained, trained_buffers in runs[1:]:
        assert all(torch.equal(trained[key], runs[0][0][key]) for key in trained)
        assert all(torch.equal(trained_buffers[key], runs[0][1][key]) for key in trained_buffers)


@pytest.mark.parametrize("momentum", [None, 1.0, 0.3])
def test_running_statistics_follow_the_stackable_batchnorm(momentum):
    """Cumulative average (None), a copy (1.0) and other momenta, against the vmap path."""
    shape = (1, 28, 28)
    module = build_resnet4(shape, "1/2", depth="layer3")
    for layer in module.modules():
        if isinstance(layer, StackableBatchNorm2d):
            layer.momentum = momentum
    train, parameters, buffers, orders = run(module, shape, "sgd", 3, "resnet", epochs=1)
    _, resnet_buffers = train(parameters, buffers, orders)
    _, vmap_buffers = train(parameters, buffers, orders, path="vmap")
    for key, value in vmap_buffers.items():
        if key.endswith("num_batches_tracked"):
            assert torch.equal(resnet_buffers[key], value) and int(value[0]) == 5
        else:
            torch.testing.assert_close(resnet_buffers[key], value, rtol=1e-4, atol=1e-6)


def test_the_tiling_pool_routes_gradients_as_aten_does_ties_included():
    x = torch.randn(2, 3, 2, 7, 9).round()  # rounded: many ties within windows
    x[0, 0, 0, :2, :2] = 1.0  # a window of four equal maxima
    grad = torch.randn(2, 3, 2, 3, 4)
    pooled = tiling_pool_forward(x)
    reference, indices = torch.ops.aten.max_pool2d_with_indices(
        x.flatten(0, 1), [2, 2], [2, 2], [0, 0], [1, 1], False
    )
    assert torch.equal(pooled, reference.view(pooled.shape))
    expected = torch.ops.aten.max_pool2d_with_indices_backward(
        grad.flatten(0, 1), x.flatten(0, 1), [2, 2], [2, 2], [0, 0], [1, 1], False, indices
    )
    assert torch.equal(tiling_pool_backward(grad, x, pooled), expected.view(x.shape))


def test_only_what_the_resnet_path_computes_is_planned():
    for depth in ("layer3", "layer2-3", "full"):
        assert plan_resnet(build_resnet4((1, 28, 28), "1/2", depth=depth)) is not None
    assert plan_resnet(build_resnet4((3, 32, 32), 1, bias=True)) is not None
    lenet = build_lenet((1, 28, 28), "1/6")
    assert plan_resnet(lenet) is None and choose_path(lenet, OPTIMIZERS["sgd"]) == "conv"
    strided = build_resnet4((1, 28, 28), "1/2")
    strided.prep[0].stride = (2, 2)
    no_stats = build_resnet4((1, 28, 28), "1/2")
    no_stats.prep[1] = nn.BatchNorm2d(3, track_running_stats=False)
    plain = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(1352, 2))
    for module in (strided, no_stats, plain):
        assert plan_resnet(module) is None
        assert choose_path(module, OPTIMIZERS["sgd"]) == "vmap"
