"""engine.evaluation computes the numbers of stacked.evaluate: the same logits, bit for bit, so the
same correct and tied counts under both tie rules, whatever the thread count (ResNet4 where
convnet.c is built excepted: its kernel's logits, tests/test_resnet_kernel.py).

The reference is StackedForward run in stacked.evaluate's chunks (MODELS_PER_CALL networks x
IMAGES_PER_CALL images per call): the arithmetic evaluation had before engine/evaluation.py.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from benchsuite.architectures.lenet import build_lenet
from benchsuite.architectures.mlp import build_mlp
from benchsuite.architectures.resnet4 import build_resnet4
from benchsuite.engine import evaluation, native, wide
from benchsuite.protocol import TIE_RULES
from benchsuite.records import PriorSpec, kaiming_uniform_bound
from benchsuite.stacked import (
    IMAGES_PER_CALL,
    MODELS_PER_CALL,
    StackedForward,
    correct_counts,
    init_stacked,
    tie_counts,
)
from benchsuite.stacked import evaluate as old_evaluate

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small kernels: see conftest.py
KAIMING = PriorSpec(name="kaiming-uniform", family="uniform", scale=kaiming_uniform_bound)


def networks(module: nn.Module, count: int, seed: int = 0, biases: bool = True):
    """Stacked networks from the prior, with nonzero biases (trained networks have them) and a
    few dead ones (every logit pair tied) among them."""
    parameters, buffers = init_stacked(module, KAIMING, list(range(seed, seed + count)), "cpu")
    generator = torch.Generator().manual_seed(seed)
    for name, value in parameters.items():
        if name.endswith("bias") and biases:
            value.copy_(torch.rand(value.shape, generator=generator) * 0.2 - 0.1)
    last = [name for name in parameters if name.endswith("weight")][-1]
    parameters[last][1::5] = 0.0  # dead: both logits 0, tied on every image
    if last.replace("weight", "bias") in parameters:
        parameters[last.replace("weight", "bias")][1::5] = 0.0
    return parameters, buffers


def images(count: int, shape=(1, 28, 28), seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(count, *shape, generator=generator)
    return x, torch.randint(0, 2, (count,), generator=generator)


def reference_logits(module, parameters, buffers, x):
    """StackedForward in stacked.evaluate's chunks."""
    count, n = next(iter(parameters.values())).shape[0], x.shape[0]
    rows = []
    for m in range(0, count, MODELS_PER_CALL):
        p = {k: v[m : m + MODELS_PER_CALL] for k, v in parameters.items()}
        b = {k: v[m : m + MODELS_PER_CALL] for k, v in buffers.items()}
        forward = StackedForward(module)
        rows.append(
            torch.cat(
                [forward(p, b, x[i : i + IMAGES_PER_CALL]) for i in range(0, n, IMAGES_PER_CALL)], 1
            )
        )
    return torch.cat(rows)


def assert_same(module, parameters, buffers, x, y, workers=(1, 2, 3)):
    module.eval()
    expected = reference_logits(module, parameters, buffers, x)
    for count in workers:
        got = evaluation.logits(module, parameters, buffers, x, workers=count)
        assert torch.equal(got, expected), (
            f"workers={count}: max |diff| {(got - expected).abs().max()}"
        )
    for rule in TIE_RULES:  # what stacked.evaluate counts from these logits, chunk by chunk
        old_accuracy = correct_counts(expected, y, rule).double() / x.shape[0]
        old_ties = tie_counts(expected)
        accuracy, ties = evaluation.evaluate(module, parameters, buffers, x, y, rule, workers[-1])
        assert torch.equal(accuracy, old_accuracy) and torch.equal(ties, old_ties)
    if expected.shape[0] > 1:
        assert int(old_ties.sum()) > 0  # the dead networks' ties are counted the same


@pytest.mark.parametrize("width", ["1/6", 1])
@pytest.mark.parametrize("bias", [False, True])
def test_mlp_logits_are_the_old_ones(width, bias):
    module = build_mlp((1, 28, 28), width, bias=bias)
    assert wide.WidePlan.of(module, (1, 28, 28)) is not None  # the wide path runs it
    parameters, buffers = networks(module, 37, biases=bias)
    for n in (16, 200, 700):  # a training set (old path), one block, several blocks
        assert_same(module, parameters, buffers, *images(n))


@pytest.mark.parametrize("width", ["1/6", "2/6", 1])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_lenet_logits_are_the_old_ones(width, shape):
    module = build_lenet(shape, width, bias=True)
    # SGD-trained LeNets have biases: their shape probe once failed on the meta device, and
    # the whole test set went through StackedForward, 9x slower, with the same numbers
    assert wide.WidePlan.of(module, shape) is not None
    for count in (1, 2, 37):
        parameters, buffers = networks(module, count, seed=count)
        assert_same(module, parameters, buffers, *images(300, shape), workers=(1, 2))


def test_lenet_without_biases_and_its_depth_variants():
    for depth in ("1c-1f", "2c-1f", "2c-2f"):
        module = build_lenet((1, 28, 28), "1/6", depth=depth)
        parameters, buffers = networks(module, 9, biases=False)
        assert_same(module, parameters, buffers, *images(150), workers=(1, 2))


def test_chunk_boundaries_of_the_old_path_are_kept():
    """More networks than MODELS_PER_CALL and more images than IMAGES_PER_CALL: the old calls'
    group counts and row counts decide kernels, so the wide path keeps their boundaries."""
    lenet = build_lenet((1, 28, 28), "1/6", bias=True)
    parameters, buffers = networks(lenet, MODELS_PER_CALL + 44)
    assert_same(lenet, parameters, buffers, *images(130), workers=(2,))
    mlp = build_mlp((1, 28, 28), "1/6", bias=True)
    parameters, buffers = networks(mlp, 3)
    x, y = images(IMAGES_PER_CALL + 104)
    assert_same(mlp, parameters, buffers, x, y, workers=(1, 2))
    for rule in TIE_RULES:  # and stacked.evaluate itself
        assert all(
            torch.equal(new, old)
            for new, old in zip(
                evaluation.evaluate(mlp, parameters, buffers, x, y, rule),
                old_evaluate(mlp, parameters, buffers, x, y, rule),
            )
        )


def test_modules_the_wide_path_does_not_run_give_the_old_numbers():
    """BatchNorm networks (ResNet4, eval mode, without the compiled kernels: with them, convnet.c,
    tests/test_resnet_kernel.py), a Linear over image rows: StackedForward itself."""
    resnet = build_resnet4((1, 28, 28), "1/6")
    parameters, buffers = networks(resnet, 5, biases=False)
    for name, value in buffers.items():  # as if calibrated: statistics of some data
        if name.endswith("running_var"):
            value.uniform_(0.5, 2.0)
    assert wide.WidePlan.of(resnet, (1, 28, 28)) is None
    with native.switched_off():
        assert_same(resnet, parameters, buffers, *images(100), workers=(1, 2))
    rows = nn.Sequential(nn.Linear(28, 8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 28, 2))
    assert wide.WidePlan.of(rows, (1, 28, 28)) is None
    parameters, buffers = networks(rows, 4)
    assert_same(rows, parameters, buffers, *images(100), workers=(1, 2))


def test_a_formulation_is_used_only_where_it_gives_the_old_bits():
    """agrees() compares bits, it does not assume: a first conv of ONE output channel (one
    LeNet-1/6 network) is another oneDNN algorithm than the same conv with more channels; the
    im2col products are used for it only if they match it here, and the pooled first layer
    where many networks share the call (the single-network LeNet above is exact either way)."""
    plan = wide.WidePlan.of(build_lenet((1, 28, 28), "1/6"), (1, 28, 28))
    first = plan.steps[0]
    assert first.shape_out[0] == 1 and plan.first_pool is not None
    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(4))
    weight = torch.randn(1, 1, 1, 5, 5, generator=torch.Generator().manual_seed(3))
    old = torch.nn.functional.conv2d(x, weight[0])
    im2col = wide.first_conv(first, "im2col", weight, x, wide.patches(x, first.layer))
    chosen = wide.formulations(plan, 1, 1)[0]
    assert (chosen == "conv") == (not torch.equal(im2col, old))
    assert wide.formulations(plan, 32, 256)[0] == "pooled"  # many channels: the measured case


def test_no_networks_or_no_images():
    module = build_mlp((1, 28, 28), "1/6")
    parameters, buffers = networks(module, 2)
    empty = {k: v[:0] for k, v in parameters.items()}
    accuracy, ties = evaluation.evaluate(module, empty, buffers, *images(5))
    assert accuracy.shape == (0,) and ties.shape == (0,)
    accuracy, ties = evaluation.evaluate(module, parameters, buffers, *images(0))
    assert accuracy.tolist() == [0.0, 0.0] and ties.tolist() == [0, 0]
