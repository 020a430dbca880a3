"""convnet.c's kernel for BatchNorm networks (bs_resnet_gradients): the "resnet" training path
where the kernels are built (tests/test_stacked_resnet.py: its torch formulation).

- a network trained in a stack on the kernel equals it trained alone, bit for bit, parameters and
  BatchNorm buffers (SGD with momentum and weight decay, Adam);
- one step's gradients and running statistics equal the torch formulation's to float32 rounding
  (other summation orders), and SGD trains as on the vmap path to its tolerance;

Adam is not compared with the vmap path here: a weight whose float64 gradient is at float32's
noise (seen: 5.2e-9 of a largest 0.21, the kernel's float32 -7.5e-9, torch's +7.5e-9) moves by
-lr or +lr, and the two runs then drift apart as any two roundings would (docs/performance.md).
"""

from __future__ import annotations

import pytest
import torch

from benchsuite.architectures.resnet4 import build_resnet4
from benchsuite.builtins.optimizers import benchsuite_optimizers
from benchsuite.engine import native
from benchsuite.engine.batches import round_orders
from benchsuite.engine.training import initial_parameters, train_networks
from benchsuite.records import PriorSpec, kaiming_uniform_bound

pytestmark = pytest.mark.skipif(native.library() is None, reason="convnet.c is not built here")

OPTIMIZERS = {spec.name: spec for spec in benchsuite_optimizers()}
KAIMING = PriorSpec(name="kaiming-uniform", family="uniform", scale=kaiming_uniform_bound)
HYPERPARAMETERS = {"sgd": {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3}, "sgd1": {"lr": 1.0}}
CASES = [
    ((1, 28, 28), "1/2", "full", 3),
    ((1, 28, 28), 1, "layer2-3", 2),
    ((3, 32, 32), "1/6", "layer3", 3),
]


def trainer(shape, width, depth, count, name, n=9, batch=2, epochs=2, seed=5):
    module = build_resnet4(shape, width, depth=depth)
    generator = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, *shape, generator=generator), torch.arange(n) % 2
    parameters, buffers = initial_parameters(module, KAIMING, seed, range(count), "cpu")
    orders = round_orders(seed, range(count), n, epochs, "independent")
    spec = OPTIMIZERS["sgd" if name == "sgd1" else name]
    hyperparameters = HYPERPARAMETERS.get(name, dict(spec.defaults))

    def train(p=parameters, b=buffers, o=orders, path="resnet"):
        return train_networks(module, x, y, spec, hyperparameters, p, b, o, batch, path=path)

    return train, parameters, buffers, orders


def single(stacked: dict, k: int) -> dict:
    return {name: value[k : k + 1] for name, value in stacked.items()}


@pytest.mark.parametrize("shape, width, depth, count", CASES)
@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_a_network_trained_in_a_stack_equals_it_trained_alone(shape, width, depth, count, name):
    train, parameters, buffers, orders = trainer(shape, width, depth, count, name)
    stacked, stacked_buffers = train()
    for k in range(count):
        alone, alone_buffers = train(single(parameters, k), single(buffers, k), orders[k : k + 1])
        for key in alone:
            assert not torch.equal(alone[key][0], parameters[key][k])
            assert torch.equal(stacked[key][k], alone[key][0]), (k, key)
        for key in alone_buffers:
            assert torch.equal(stacked_buffers[key][k], alone_buffers[key][0]), (k, key)


@pytest.mark.parametrize(
    "shape, width, depth", [((1, 28, 28), "1/2", "full"), ((3, 32, 32), 1, "layer2-3")]
)
def test_one_steps_gradients_are_the_torch_formulations(shape, width, depth):
    """SGD at lr 1, one step (a batch of all 4 images): the weights move by minus the gradient,
    so the moves are the two formulations' gradients; the running statistics come along. The
    default is the kernel: its bits are not the torch formulation's (BENCHSUITE_NATIVE=0)."""
    train, parameters, buffers, _ = trainer(shape, width, depth, 3, "sgd1", n=4, batch=4, epochs=1)
    kernel, kernel_buffers = train()
    with native.switched_off():
        torch_way, torch_buffers = train()
    assert any(not torch.equal(kernel[key], torch_way[key]) for key in kernel)  # other roundings
    for key, start in parameters.items():
        moved, expected = kernel[key] - start, torch_way[key] - start
        scale = float(expected.abs().max())
        assert scale > 0, key
        torch.testing.assert_close(moved, expected, rtol=1e-4, atol=1e-5 * scale)
    for key, value in torch_buffers.items():
        torch.testing.assert_close(kernel_buffers[key], value, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("shape, width, depth, count", CASES)
def test_sgd_trains_as_on_the_vmap_path(shape, width, depth, count):
    train, *_ = trainer(shape, width, depth, count, "sgd")
    kernel, kernel_buffers = train()
    vmap, vmap_buffers = train(path="vmap")
    for key, value in vmap.items():
        torch.testing.assert_close(kernel[key], value, rtol=1e-3, atol=1e-5)
    for key, value in vmap_buffers.items():
        torch.testing.assert_close(kernel_buffers[key], value, rtol=1e-3, atol=1e-5)


def test_the_lipschitz_metrics_input_gradients_are_float64s():
    """bs_resnet_margin_norms (eval mode: each BatchNorm with its running statistics) against
    autograd's in float64: to float32 rounding at all but a few networks and images, kinks where a
    max pool or ReLU decides otherwise (autograd in float32 misses there too, by up to 2e-3), the
    same
    whatever the thread count, and what the metric's entry point gives for ResNet4."""
    from benchsuite.engine.stacked_resnet import native_resnet_margin_norms
    from benchsuite.metrics.normalized import input_gradient_norms, vmapped_gradient_norms

    generator = torch.Generator().manual_seed(1)
    for shape, width, depth in (((1, 28, 28), "1/2", "full"), ((3, 32, 32), 1, "layer2-3")):
        module = build_resnet4(shape, width, depth=depth)
        parameters, buffers = initial_parameters(module, KAIMING, 3, range(10), "cpu")
        parameters = {
            k: v + 0.1 * torch.randn(v.shape, generator=generator) for k, v in parameters.items()
        }
        for key, value in buffers.items():  # running statistics as a trained network's
            if key.endswith("running_mean"):
                buffers[key] = value + 0.3 * torch.randn(value.shape, generator=generator)
            elif key.endswith("running_var"):
                buffers[key] = value * (0.5 + torch.rand(value.shape, generator=generator))
        x = torch.randn(24, *shape, generator=generator)
        norms = native_resnet_margin_norms(module, parameters, buffers, x, workers=1)
        double = vmapped_gradient_norms(
            module.double(), {k: v.double() for k, v in parameters.items()},
            {k: v.double() if v.is_floating_point() else v for k, v in buffers.items()},
            x.double(), 8, 64,
        )  # fmt: skip
        module.float()
        off = (norms - double).abs() > 1e-5 * double  # at a kink (seen: 1 of 240, by 4.6e-4)
        assert int(off.sum()) <= 0.02 * off.numel(), int(off.sum())
        threaded = native_resnet_margin_norms(module, parameters, buffers, x, workers=3)
        assert torch.equal(threaded, norms)
        assert torch.equal(input_gradient_norms(module, parameters, buffers, x), norms)


def test_the_test_accuracys_logits_are_stacked_forwards_to_rounding():
    """engine.evaluation's ResNet4 logits come from bs_resnet_logits: StackedForward's (the old
    numbers) to float32 rounding, float64's closer still, the same whatever the thread count; a
    dead network (zero head) ties on every image, as before."""
    from benchsuite.engine import evaluation
    from benchsuite.stacked import StackedForward, tie_counts

    generator = torch.Generator().manual_seed(2)
    for shape, width, depth in (((1, 28, 28), "1/2", "full"), ((3, 32, 32), 1, "layer3")):
        module = build_resnet4(shape, width, depth=depth).eval()
        parameters, buffers = initial_parameters(module, KAIMING, 4, range(9), "cpu")
        for key, value in buffers.items():  # as if calibrated
            if key.endswith("running_mean"):
                buffers[key] = value + 0.3 * torch.randn(value.shape, generator=generator)
            elif key.endswith("running_var"):
                buffers[key] = value * (0.5 + torch.rand(value.shape, generator=generator))
        parameters["linear.weight"][3] = 0.0  # a dead network
        x = torch.randn(50, *shape, generator=generator)
        logits = evaluation.logits(module, parameters, buffers, x, workers=1)
        assert torch.equal(evaluation.logits(module, parameters, buffers, x, workers=3), logits)
        old = StackedForward(module)(parameters, buffers, x)
        assert not torch.equal(logits, old)  # the kernel ran: other roundings
        torch.testing.assert_close(logits, old, rtol=1e-4, atol=1e-6)
        double = StackedForward(module.double())(
            {k: v.double() for k, v in parameters.items()},
            {k: v.double() if v.is_floating_point() else v for k, v in buffers.items()},
            x.double(),
        ).float()
        module.float()
        assert (logits - double).abs().max() <= (old - double).abs().max() * 4
        assert torch.equal(tie_counts(logits), tie_counts(old)) and int(tie_counts(logits)[3]) == 50
