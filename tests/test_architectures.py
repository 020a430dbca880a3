"""Architectures of protocol.md: widths, parameter counts, depth variants, stacking, BatchNorm."""

from __future__ import annotations

import copy
from fractions import Fraction

import pytest
import torch
from torch import nn

from benchsuite.architectures import build_lenet, build_mlp, build_resnet4
from benchsuite.architectures.lenet import layer_sizes
from benchsuite.architectures.mlp import hidden_sizes
from benchsuite.architectures.widths import parse_width, width_label
from benchsuite.batchnorm import (
    StackableBatchNorm2d,
    calibrate_batchnorm,
    has_batchnorm,
    make_stackable,
    stackable,
)
from benchsuite.records import PriorSpec, kaiming_uniform_bound
from benchsuite.stacked import StackedForward, init_stacked

DIGITS, MNIST, CIFAR = (1, 8, 8), (1, 28, 28), (3, 32, 32)
UNIFORM = PriorSpec(name="uniform", family="uniform", scale=lambda fan_in: 1.0)
# O(1) logits, so that an absolute tolerance of 1e-5 means something (U[-1, 1] logits reach 1e3+).
KAIMING = PriorSpec(name="kaiming-uniform", family="uniform", scale=kaiming_uniform_bound)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These networks are tiny: extra intra-op threads only fight other processes for cores."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def conv_widths(module: nn.Module) -> list[int]:
    return [m.out_channels for m in module.modules() if isinstance(m, nn.Conv2d)]


def linear_widths(module: nn.Module) -> list[int]:
    return [m.out_features for m in module.modules() if isinstance(m, nn.Linear)]


def network(module: nn.Module, parameters, buffers, k: int) -> nn.Module:
    """Stacked network k as an ordinary module of its own."""
    alone = copy.deepcopy(module)
    state = {name: value[k] for name, value in {**parameters, **buffers}.items()}
    alone.load_state_dict(state)
    return alone


# ----------------------------------------------------------------------------------- widths


@pytest.mark.parametrize(
    "width, expected",
    [
        (1, (1,) * 4),
        (0.5, (Fraction(1, 2),) * 4),
        ("1/6", (Fraction(1, 6),) * 4),
        (2 / 6, (Fraction(1, 3),) * 4),
        ("1/6*", (Fraction(1, 6), Fraction(1, 6), Fraction(1, 24), Fraction(1, 24))),
        ("1/6,1/6,1/24,1/24", (Fraction(1, 6), Fraction(1, 6), Fraction(1, 24), Fraction(1, 24))),
        ([1, "1/2", 0.25, 1], (1, Fraction(1, 2), Fraction(1, 4), 1)),
    ],
)
def test_parse_width(width, expected):
    assert parse_width(width, 4) == tuple(Fraction(e) for e in expected)


@pytest.mark.parametrize("bad", ["x", "0", -1, "1/0", "1,2", True])
def test_parse_width_rejects(bad):
    with pytest.raises(ValueError):
        parse_width(bad, 4)


def test_star_width_needs_four_layers():
    with pytest.raises(ValueError, match="'\\*' form"):
        parse_width("1/6*", 3)


@pytest.mark.parametrize(
    "width, label",
    [
        (1, "1"),
        ("1", "1"),
        (0.5, "3/6"),
        ("2/6", "2/6"),
        (2 / 6, "2/6"),
        ("4/6", "4/6"),
        ("1/6", "1/6"),
        ("1/6*", "1/6*"),
        ("1/6,1/6,1/24,1/24", "1/6*"),
        ([1, 1, 1, 1], "1"),
        (0.25, "1/4"),
        ("1,1/2,1,1", "1,3/6,1,1"),
    ],
)
def test_width_label(width, label):
    assert width_label(width) == label


# ----------------------------------------------------------------------------------- mlp


@pytest.mark.parametrize("shape, with_bias", [(MNIST, 33_128), (CIFAR, 101_768)])
def test_mlp_counts(shape, with_bias):
    """protocol.md's counts include the bias vectors (224 of them at w=1)."""
    assert count(build_mlp(shape, width=1, bias=True)) == with_bias
    assert count(build_mlp(shape, width=1)) == with_bias - (120 + 60 + 30 + 12 + 2)


@pytest.mark.parametrize(
    "depth, sizes", [(1, [4]), (2, [10, 4]), (3, [20, 10, 4]), (4, [40, 20, 10, 4])]
)
def test_mlp_depth_drops_largest_layers_first(depth, sizes):
    assert hidden_sizes("2/6", depth) == sizes
    assert linear_widths(build_mlp(MNIST, "2/6", depth)) == sizes + [2]


def test_mlp_widths_and_inputs():
    assert hidden_sizes("1/6") == [20, 10, 5, 2]
    assert hidden_sizes("4/6") == [80, 40, 20, 8]
    for shape, features in [(DIGITS, 16), (MNIST, 196), (CIFAR, 768)]:
        first = next(m for m in build_mlp(shape).modules() if isinstance(m, nn.Linear))
        assert first.in_features == features
    assert build_mlp(DIGITS)(torch.randn(5, *DIGITS)).shape == (5, 2)
    assert all(not isinstance(m, nn.Linear) or m.bias is None for m in build_mlp(MNIST).modules())


@pytest.mark.parametrize("depth", [0, 5, "deep", 2.5])
def test_mlp_bad_depth(depth):
    with pytest.raises(ValueError):
        build_mlp(MNIST, depth=depth)


# ----------------------------------------------------------------------------------- lenet

LENET_COUNTS = [  # protocol.md (MNIST / CIFAR), reproduced with bias vectors
    ("1/6", MNIST, 1_062),
    ("1/6", CIFAR, 1_472),
    ("2/6", MNIST, 4_753),
    ("2/6", CIFAR, 6_653),
    (1, MNIST, 43_746),
    (1, CIFAR, 61_326),
]


@pytest.mark.parametrize("width, shape, expected", LENET_COUNTS)
def test_lenet_counts(width, shape, expected):
    assert count(build_lenet(shape, width, bias=True)) == expected
    biases = sum(layer_sizes(width)) + 2
    assert count(build_lenet(shape, width)) == expected - biases
    assert build_lenet(shape, width)(torch.randn(3, *shape)).shape == (3, 2)


def test_lenet_width_float_equals_fraction():
    assert layer_sizes(2 / 6) == layer_sizes("2/6") == (2, 5, 40, 28)
    assert layer_sizes("1/6") == (1, 2, 20, 14)
    assert layer_sizes(1) == (6, 16, 120, 84)


def test_lenet_star_width():
    assert layer_sizes("1/6*") == (1, 2, 5, 3)  # int(120/24) = 5, int(84/24) = 3
    model = build_lenet(MNIST, "1/6*")
    assert linear_widths(model) == [5, 3, 2]
    assert count(model) == 25 + 50 + 2 * 16 * 5 + 5 * 3 + 3 * 2
    assert model(torch.randn(2, *MNIST)).shape == (2, 2)


@pytest.mark.parametrize(
    "depth, convs, linears",
    [
        ("1c-1f", [2], [2]),
        ("2c-1f", [2, 5], [2]),
        ("2c-2f", [2, 5], [40, 2]),
        ("2c-3f", [2, 5], [40, 28, 2]),
        (None, [2, 5], [40, 28, 2]),
    ],
)
def test_lenet_depth_variants(depth, convs, linears):
    model = build_lenet(MNIST, "2/6", depth)
    assert conv_widths(model) == convs
    assert linear_widths(model) == linears
    assert model(torch.randn(2, *MNIST)).shape == (2, 2)
    first_fc = next(m for m in model.modules() if isinstance(m, nn.Linear))
    assert first_fc.in_features == {1: 2 * 12 * 12, 2: 5 * 4 * 4}[len(convs)]


def test_lenet_too_small_input():
    with pytest.raises(ValueError, match="lenet needs inputs of at least 16x16"):
        build_lenet(DIGITS)
    with pytest.raises(ValueError):
        build_lenet((1, 5, 5), depth="1c-1f")
    assert build_lenet(DIGITS, depth="1c-1f")(torch.randn(2, *DIGITS)).shape == (2, 2)
    with pytest.raises(ValueError, match="depth"):
        build_lenet(MNIST, depth="3c-1f")


# ----------------------------------------------------------------------------------- resnet4


@pytest.mark.parametrize("width", ["1/6", "2/6", "3/6", "4/6", 1, "1/6*"])
@pytest.mark.parametrize("depth", ["layer3", "layer2-3", "full"])
@torch.no_grad()
def test_resnet4_builds_and_runs(width, depth):
    for shape in (MNIST, CIFAR) if depth == "full" else (MNIST,):
        model = build_resnet4(shape, width, depth)
        assert has_batchnorm(model)
        assert model(torch.randn(2, *shape)).shape == (2, 2)
        assert model.eval()(torch.randn(2, *shape)).shape == (2, 2)


def test_resnet4_structure():
    full = build_resnet4(CIFAR, 1)
    assert conv_widths(full) == [6, 12, 12, 12, 24, 48, 48, 48]
    assert all(m.bias is None for m in full.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert [name for name, _ in full.named_children()][:4] == ["prep", "layer1", "layer2", "layer3"]
    shallow = build_resnet4(CIFAR, 1, "layer3")
    assert conv_widths(shallow) == [6, 48, 48, 48]
    middle = build_resnet4(CIFAR, 1, 2)
    assert conv_widths(middle) == [6, 24, 48, 48, 48]
    assert build_resnet4(DIGITS, "2/6")(torch.randn(2, *DIGITS)).shape == (2, 2)
    with pytest.raises(ValueError):
        build_resnet4(MNIST, depth="layer1")


# ----------------------------------------------------------------------------------- batchnorm


def close(actual, expected):
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def _reference_statistics(module, parameters, buffers, x, k):
    """Network k alone, hooks on each BatchNorm's input: its mean and biased variance."""
    alone = network(module, parameters, buffers, k).train()
    stats = {}
    for name, layer in alone.named_modules():
        if isinstance(layer, nn.BatchNorm2d):

            def hook(_, inputs, name=name):
                x = inputs[0]
                stats[name] = (x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=False))

            layer.register_forward_pre_hook(hook)
    with torch.no_grad():
        alone(x)
    return stats


def test_batchnorm_calibration_reproduces_train_mode():
    torch.manual_seed(0)
    module = build_resnet4(MNIST, "2/6")
    parameters, buffers = init_stacked(module, UNIFORM, [1, 2, 3], "cpu")
    original = {k: v.clone() for k, v in buffers.items()}
    x = torch.randn(8, *MNIST)

    calibrated = calibrate_batchnorm(module, parameters, buffers, x, models_per_call=2)
    assert all(torch.equal(buffers[k], original[k]) for k in buffers)  # inputs untouched

    forward = StackedForward(module)
    with torch.no_grad():
        module.train()
        train_logits = forward(parameters, {k: v.clone() for k, v in buffers.items()}, x)
        module.eval()
        eval_logits = forward(parameters, calibrated, x)
    torch.testing.assert_close(eval_logits, train_logits, rtol=1e-4, atol=1e-5)

    for k in range(3):
        for name, (mean, var) in _reference_statistics(module, parameters, buffers, x, k).items():
            close(calibrated[f"{name}.running_mean"][k], mean)
            close(calibrated[f"{name}.running_var"][k], var)


def test_batchnorm_calibration_without_batchnorm_is_identity():
    module = build_mlp(MNIST)
    assert not has_batchnorm(module)
    parameters, buffers = init_stacked(module, UNIFORM, [1, 2], "cpu")
    assert calibrate_batchnorm(module, parameters, buffers, torch.randn(4, *MNIST)) == {}


# ----------------------------------------------------------------------------------- stacking

STACKED_CASES = [
    ("mlp", build_mlp, DIGITS, {}),
    ("mlp", build_mlp, CIFAR, {"width": "2/6", "depth": 2}),
    ("lenet", build_lenet, MNIST, {"width": "1/6*"}),
    ("lenet", build_lenet, CIFAR, {"width": "2/6", "depth": "2c-2f", "bias": True}),
    ("resnet4", build_resnet4, MNIST, {"width": "2/6"}),
    ("resnet4", build_resnet4, DIGITS, {"width": "1/6", "depth": "layer2-3"}),
]


@pytest.mark.parametrize("name, build, shape, options", STACKED_CASES)
def test_stacked_forward_matches_each_network_alone(name, build, shape, options):
    torch.manual_seed(1)
    module = build(shape, **options).eval()
    parameters, buffers = init_stacked(module, KAIMING, [3, 4, 5], "cpu")
    x = torch.randn(6, *shape)
    if has_batchnorm(module):
        buffers = calibrate_batchnorm(module, parameters, buffers, x)
    with torch.no_grad():
        stacked = StackedForward(module)(parameters, buffers, x)
        assert stacked.shape == (3, 6, 2)
        for k in range(3):
            alone = network(module, parameters, buffers, k)
            torch.testing.assert_close(stacked[k], alone(x), rtol=1e-5, atol=1e-5)


def test_registered():
    from benchsuite.builtins.architectures import benchsuite_architectures

    specs = {spec.name: spec for spec in benchsuite_architectures()}
    assert set(specs) == {"mlp", "lenet", "resnet4"}
    for spec in specs.values():
        model = spec.build(MNIST, width=spec.default_width, depth=spec.default_depth)
        assert model(torch.randn(2, *MNIST)).shape == (2, 2)


# ------------------------------------------------------------------------- stackable batchnorm


@pytest.mark.parametrize("momentum", [0.1, None, 1.0])
def test_stackable_batchnorm_matches_native(momentum):
    """Same outputs and running statistics as nn.BatchNorm2d, step by step, train and eval."""
    torch.manual_seed(2)
    native = nn.BatchNorm2d(4, momentum=momentum)
    nn.init.uniform_(native.weight, 0.9, 1.1)
    nn.init.uniform_(native.bias, -0.05, 0.05)
    mine = stackable(native)
    assert isinstance(mine, StackableBatchNorm2d) and isinstance(mine, nn.BatchNorm2d)
    for _ in range(3):
        x = torch.randn(5, 4, 3, 3) * 3 + 1
        close(mine(x), native(x))
    for name, value in native.state_dict().items():
        torch.testing.assert_close(mine.state_dict()[name], value, rtol=1e-5, atol=1e-6)
    x = torch.randn(5, 4, 3, 3)
    close(mine.eval()(x), native.eval()(x))


def test_calibration_of_a_module_with_native_batchnorm():
    """Third-party modules with plain nn.BatchNorm2d are calibrated through stackable copies."""
    module = nn.Sequential(
        nn.Conv2d(1, 3, 3, bias=False), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2)
    )
    module(torch.randn(2, 1, 6, 6))  # materialise the lazy layer
    stacked_module = make_stackable(module)
    assert isinstance(stacked_module[1], StackableBatchNorm2d)
    assert isinstance(module[1], nn.BatchNorm2d) and not isinstance(module[1], StackableBatchNorm2d)
    parameters, buffers = init_stacked(module, KAIMING, [1, 2], "cpu")
    x = torch.randn(7, 1, 6, 6)
    calibrated = calibrate_batchnorm(module, parameters, buffers, x)
    for k in range(2):
        (mean, var) = _reference_statistics(module, parameters, buffers, x, k)["1"]
        close(calibrated["1.running_mean"][k], mean)
        close(calibrated["1.running_var"][k], var)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_resnet4_stacked_on_cuda():
    """The CUDA path (where native BatchNorm under vmap can fail) runs, trains and calibrates."""
    module = build_resnet4(MNIST, "2/6").cuda()
    parameters, buffers = init_stacked(module, UNIFORM, list(range(40)), "cuda")
    x = torch.randn(16, *MNIST, device="cuda")
    previous = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # TF32 results depend on the models per call
    try:
        calibrated = calibrate_batchnorm(module, parameters, buffers, x, models_per_call=16)
        trained = {k: v.clone().requires_grad_() for k, v in parameters.items()}
        train_logits = StackedForward(module.train())(
            trained, {k: v.clone() for k, v in buffers.items()}, x
        )
        train_logits.square().mean().backward()
        assert trained["prep.0.weight"].grad.abs().sum() > 0
        with torch.no_grad():
            eval_logits = StackedForward(module.eval())(parameters, calibrated, x)
        torch.testing.assert_close(eval_logits, train_logits.detach(), rtol=1e-4, atol=1e-5)
    finally:
        torch.backends.cudnn.allow_tf32 = previous
