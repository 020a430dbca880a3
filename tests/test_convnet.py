"""LeNet-family training through the compiled kernel (engine/convnet.c, stacked_conv._run_native):
autograd's gradients to float32 rounding on every kind of network it takes; the networks it does
not take keep the patches formulation; the patches formulation where no kernel is built; NaN as
aten propagates it. (A network in a stack equals it alone: tests/test_stacked_conv.py, which runs
on this kernel wherever it is built.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from benchsuite.architectures.lenet import build_lenet
from benchsuite.builtins.optimizers import benchsuite_optimizers
from benchsuite.engine import native, stacked_conv
from benchsuite.engine.batches import round_orders
from benchsuite.engine.stacked_conv import native_ops, plan_conv
from benchsuite.engine.stacked_mlp import flat_views
from benchsuite.engine.training import initial_parameters, train_networks
from benchsuite.records import PriorSpec, kaiming_uniform_bound
from benchsuite.schedules import Schedule

SGD = next(spec for spec in benchsuite_optimizers() if spec.name == "sgd")
KAIMING = PriorSpec(name="kaiming-uniform", family="uniform", scale=kaiming_uniform_bound)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def kernel():
    assert native.library() is not None, "setup.sh installs a C compiler; the kernel must build"


def odd_net():
    """Not a LeNet: odd sizes (a pool that drops a row), a 3x4 kernel, no bias on the first layer,
    two ReLUs after the flatten, a ReLU before and after pools."""
    return nn.Sequential(
        nn.Conv2d(2, 3, (3, 4), bias=False), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(3, 4, 3), nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(),
        nn.Linear(4 * 3 * 3, 7), nn.ReLU(), nn.Linear(7, 5), nn.ReLU(), nn.Linear(5, 3),
    )  # fmt: skip


CASES = [
    (lambda: build_lenet((1, 28, 28), "1/6", bias=True), (1, 28, 28), 2),
    (lambda: build_lenet((1, 28, 28), "2/6", depth="1c-1f"), (1, 28, 28), 2),
    (lambda: build_lenet((1, 28, 28), 1, depth="2c-2f", bias=True), (1, 28, 28), 2),
    (lambda: build_lenet((3, 32, 32), "2/6", bias=True), (3, 32, 32), 2),
    (lambda: build_lenet((3, 32, 32), 1, depth="2c-1f"), (3, 32, 32), 2),  # 593k multiply-adds
    (odd_net, (2, 19, 21), 3),
]


def one_sgd_step(make, shape, classes, count=3, batch=2, n=6):
    """(engine's parameters after one SGD step of lr 1, autograd's, the initial ones)."""
    module = make()
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(n, *shape, generator=generator)
    y = torch.arange(n) % classes
    parameters, buffers = initial_parameters(module, KAIMING, 1, range(count), "cpu")
    orders = round_orders(2, range(count), n, 1, "independent")
    one_step = orders[:, :, :batch].contiguous()  # [K, 1 epoch, b]: a single step
    trained, _ = train_networks(
        module, x, y, SGD, {"lr": 1.0}, parameters, buffers, one_step, batch, path="conv"
    )
    expected = {}
    for k in range(count):
        network = make()
        with torch.no_grad():
            for name, p in network.named_parameters():
                p.copy_(parameters[name][k])
        picked = one_step[k, 0]
        F.cross_entropy(network(x[picked]), y[picked]).backward()
        for name, p in network.named_parameters():
            expected.setdefault(name, []).append(p.detach() - p.grad)
    return trained, {name: torch.stack(v) for name, v in expected.items()}, parameters


@pytest.mark.parametrize("make, shape, classes", CASES)
def test_one_step_equals_autograds(kernel, make, shape, classes):
    module = make()
    plan = plan_conv(module)
    flat, params = flat_views(initial_parameters(module, KAIMING, 1, range(2), "cpu")[0])
    assert native_ops(plan, params, params, shape) is not None  # the kernel takes it
    trained, expected, initial = one_sgd_step(make, shape, classes)
    for name in expected:  # the step (minus the gradient) against autograd's, to float32 rounding
        step, want = trained[name] - initial[name], expected[name] - initial[name]
        scale = want.abs().max()
        assert scale > 0, name
        torch.testing.assert_close(step, want, rtol=1e-4, atol=1e-5 * float(scale))


def test_what_the_kernel_does_not_take(kernel):
    def ops(module, shape):
        params = flat_views(initial_parameters(module, KAIMING, 1, range(2), "cpu")[0])[1]
        return native_ops(plan_conv(module), params, params, shape)

    assert ops(build_lenet((1, 28, 28), 1), (1, 28, 28)) is not None  # 240k multiply-adds
    assert ops(build_lenet((3, 32, 32), 1), (3, 32, 32)) is not None  # 593k
    assert ops(build_lenet((3, 32, 32), 2), (3, 32, 32)) is None  # 1.67M: patches are faster
    strided = nn.Sequential(
        nn.Conv2d(1, 2, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(72, 2)
    )  # fmt: skip
    assert ops(strided, (1, 13, 13)) is None  # the grouped formulation
    three = nn.Sequential(nn.Conv2d(1, 2, 5), nn.MaxPool2d(3), nn.Flatten(), nn.Linear(32, 2))
    assert ops(three, (1, 16, 16)) is None  # only 2x2 pools
    with native.switched_off():
        assert ops(build_lenet((1, 28, 28), "1/6"), (1, 28, 28)) is None


def test_without_the_kernel_the_patches_formulation_trains_the_same_model(kernel):
    """Other roundings, the same model: the two formulations agree to float32 rounding."""
    make, shape = (lambda: build_lenet((1, 28, 28), "2/6", bias=True)), (1, 28, 28)
    fast, _, _ = one_sgd_step(make, shape, 2)
    with native.switched_off():
        slow, _, _ = one_sgd_step(make, shape, 2)
    for name in fast:
        torch.testing.assert_close(fast[name], slow[name], rtol=1e-5, atol=1e-6)


def test_a_nan_spreads_as_in_aten(kernel):
    """A NaN weight makes that network's loss and step NaN (so the engine's divergence rule sees
    it), and leaves the other networks of the stack as they were."""
    module = build_lenet((1, 28, 28), "1/6")
    x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    y = torch.arange(4) % 2
    parameters, buffers = initial_parameters(module, KAIMING, 1, range(2), "cpu")
    alone = {name: value[1:].clone() for name, value in parameters.items()}
    parameters["0.weight"][0, 0, 0, 2, 2] = float("nan")
    orders = round_orders(2, range(2), 4, 1, "independent")[:, :, :2].contiguous()
    trained, _ = train_networks(
        module, x, y, SGD, {"lr": 0.1}, parameters, buffers, orders, 2, path="conv"
    )
    assert torch.isnan(trained["0.weight"][0]).any()
    other, _ = train_networks(module, x, y, SGD, {"lr": 0.1}, alone, {}, orders[1:], 2, path="conv")
    for name in trained:
        assert torch.equal(trained[name][1:], other[name]), name


def trained_in_a_stack():
    """Two epochs of SGD of three networks each of kinds that meet every blocked and leftover loop
    of convnet.c (rows, channels, taps, columns past a multiple of eight), with exact zeros in the
    images (ReLU and pool ties)."""
    results = {}
    for index, (make, shape, classes) in enumerate(CASES):
        module = make()
        x = torch.randn(8, *shape, generator=torch.Generator().manual_seed(index))
        x[:, :, :3] = 0.0
        y = torch.arange(8) % classes
        parameters, buffers = initial_parameters(module, KAIMING, 4, range(3), "cpu")
        orders = round_orders(4, range(3), 8, 2, "independent")
        trained, _ = train_networks(
            module, x, y, SGD, {"lr": 0.05}, parameters, buffers, orders, 2, path="conv"
        )  # fmt: skip
        results.update({f"{index}/{name}": value for name, value in trained.items()})
    return results | resnets_trained_and_tested()


def resnets_trained_and_tested():
    """ResNet4s on convnet.c's BatchNorm entry points: trained (parameters and running
    statistics), then their eval-mode logits and margin norms; output channels of 3 to 48, planes
    of 12 to 1 pixels (the narrow convolutions' lanes, partly filled)."""
    from benchsuite.architectures.resnet4 import build_resnet4
    from benchsuite.engine.stacked_resnet import native_resnet_logits, native_resnet_margin_norms

    results = {}
    for index, (shape, width, depth) in enumerate(
        [((1, 12, 12), "1/2", "full"), ((3, 10, 10), 1, "layer3")]
    ):
        module = build_resnet4(shape, width, depth=depth)
        x = torch.randn(6, *shape, generator=torch.Generator().manual_seed(index))
        y = torch.arange(6) % 2
        parameters, buffers = initial_parameters(module, KAIMING, 4, range(3), "cpu")
        orders = round_orders(4, range(3), 6, 2, "independent")
        trained, statistics = train_networks(
            module, x, y, SGD, {"lr": 0.05}, parameters, buffers, orders, 2, path="resnet"
        )  # fmt: skip
        logits = native_resnet_logits(module, trained, statistics, x)
        norms = native_resnet_margin_norms(module, trained, statistics, x)
        for name, value in {**trained, **statistics, "logits": logits, "norms": norms}.items():
            results[f"resnet{index}/{name}"] = value
    return results


BASELINE_SCRIPT = """
import sys
import torch
sys.path.insert(0, sys.argv[2])
from benchsuite.engine import native
from test_convnet import trained_in_a_stack
torch.set_num_threads(1)
assert native.library() is not None
torch.save(trained_in_a_stack(), sys.argv[1])
"""


def test_the_baseline_build_trains_the_same_bits(kernel, tmp_path):
    """convnet.c built without its AVX2 clones (the code any x86-64 machine runs) trains every
    network to the same bits as the library this machine picked: the vector width never shows."""
    compiler = native._compiler()  # the one engine/native.py would build with
    wrapper = tmp_path / "cc-baseline"
    wrapper.write_text(f'#!/bin/sh\nexec "{compiler}" -DBENCHSUITE_BASELINE_ONLY "$@"\n')
    wrapper.chmod(0o755)
    env = {**os.environ, "CC": str(wrapper), "BENCHSUITE_CACHE": str(tmp_path / "cache")}
    env.pop("BENCHSUITE_NATIVE", None)
    out = tmp_path / "baseline.pt"
    tests = str(Path(__file__).parent)
    subprocess.run(
        [sys.executable, "-c", BASELINE_SCRIPT, str(out), tests], env=env, check=True, timeout=600
    )  # fmt: skip
    assert list((tmp_path / "cache" / "native").glob("kernels-*.so"))  # it built its own library
    baseline, here = torch.load(out), trained_in_a_stack()
    assert baseline.keys() == here.keys()
    for name, value in here.items():
        assert torch.equal(value, baseline[name]), name
        if value.is_floating_point():  # -0.0 == 0.0: compare the bits too
            bits = torch.int64 if value.dtype == torch.float64 else torch.int32
            assert torch.equal(value.view(bits), baseline[name].view(bits)), name


def fused_and_stepped(monkeypatch, make, shape, classes, schedule=None, n=7, epochs=3):
    """(trained with the steps fused into convnet.c, trained a step at a time) from one init."""
    module = make()
    generator = torch.Generator().manual_seed(11)
    x = torch.randn(n, *shape, generator=generator)
    x[:, :, :2] = 0.0  # exact zeros: ReLU and pool ties
    y = torch.arange(n) % classes
    parameters, buffers = initial_parameters(module, KAIMING, 5, range(4), "cpu")
    orders = round_orders(5, range(4), n, epochs, "independent")

    def train():
        trained, _ = train_networks(
            module, x, y, SGD, {"lr": 0.05}, parameters, buffers, orders, 2, path="conv",
            schedule=schedule,
        )  # fmt: skip
        return trained

    calls = []
    real = stacked_conv._run_native_sgd
    with monkeypatch.context() as patch:
        patch.setattr(stacked_conv, "FUSED_STEPS", 3)  # several calls, a partial batch in one
        patch.setattr(stacked_conv, "_run_native_sgd", lambda *a: calls.append(1) or real(*a))
        fused = train()
        assert calls, "plain SGD on the kernel runs its steps fused"
    with stacked_conv.steps_one_at_a_time():
        return fused, train()


@pytest.mark.parametrize("make, shape, classes", CASES)
def test_fused_sgd_steps_are_the_steps_one_at_a_time(kernel, monkeypatch, make, shape, classes):
    """bs_convnet_sgd_steps (each network all its steps in one call, the update in C) trains
    every network to the bits of a step at a time with DirectSGD, partial batches included."""
    assert native.sgd_update_agrees(), "torch's add_(alpha) is a fused multiply-add on x86-64"
    fused, stepped = fused_and_stepped(monkeypatch, make, shape, classes)
    for name, value in stepped.items():
        assert torch.equal(fused[name].view(torch.int32), value.view(torch.int32)), name


def test_fused_sgd_follows_the_schedule(kernel, monkeypatch):
    """With a learning-rate schedule each fused step runs at the rate step() would have set."""
    schedule = Schedule(name="cosine", final=0.05, warmup_steps=2)
    make, shape, classes = CASES[0]
    fused, stepped = fused_and_stepped(monkeypatch, make, shape, classes, schedule=schedule)
    for name, value in stepped.items():
        assert torch.equal(fused[name], value), name
    constant, _ = fused_and_stepped(monkeypatch, make, shape, classes)
    assert not torch.equal(constant["0.weight"], fused["0.weight"])  # the schedule mattered


def test_the_sgd_update_check_can_fail(kernel):
    """native.sgd_update_agrees compares the kernel's fmaf with torch's add_; an update that
    rounds twice (p + a * g, what a machine without fused multiply-add computes) differs from it
    on such data, so the check would turn the fused path off there."""
    generator = torch.Generator().manual_seed(20261203)
    param = torch.randn(4099, generator=generator)
    grad = torch.randn(4099, generator=generator) * 3
    alpha = torch.tensor(-1 / 3, dtype=torch.float32)
    fused = param.clone()
    native.library().bs_sgd_update(fused.data_ptr(), grad.data_ptr(), -1 / 3, 4099)
    assert torch.equal(fused, param.clone().add_(grad, alpha=-1 / 3))
    twice = (param.double() + (alpha * grad).double()).float()  # the product rounded first
    assert (twice != fused).sum() > 100
