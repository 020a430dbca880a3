"""The normalized training losses of protocol.md, vectorised, against a direct per-network loop."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from benchsuite.architectures import build_lenet, build_mlp, build_resnet4
from benchsuite.builtins.priors import benchsuite_priors
from benchsuite.metrics import (
    frobenius_scale,
    input_gradient_norms,
    normalized_cross_entropy,
    train_loss_frobenius,
    train_loss_lipschitz,
)
from benchsuite.plugins import load_registry
from benchsuite.records import MetricInput
from benchsuite.stacked import init_stacked
from benchsuite.tasks import Task

PRIORS = {p.name: p for p in benchsuite_priors()}
REGISTRY = load_registry(include_entry_points=False)
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small kernels: see conftest.py


def inputs(module, parameters, buffers, task) -> MetricInput:
    return MetricInput(
        module=module, parameters=parameters, buffers=buffers, x_train=task.x_train,
        y_train=task.y_train, x_test=task.x_test, y_test=task.y_test,
    )  # fmt: skip


def make_task(shape, n_train=6, n_test=40, seed=0) -> Task:
    generator = torch.Generator().manual_seed(seed)
    return Task(
        dataset="synthetic",
        classes=(0, 1),
        n_train=n_train,
        training_set_seed=seed,
        x_train=torch.randn(n_train, *shape, generator=generator),
        y_train=torch.arange(n_train) % 2,
        x_test=torch.randn(n_test, *shape, generator=generator),
        y_test=torch.arange(n_test) % 2,
    )


def network(module, parameters, buffers, k):
    """Network k of the stack as an ordinary module."""
    single = copy.deepcopy(module)
    state = {name: value[k] for name, value in {**parameters, **buffers}.items()}
    single.load_state_dict(state)
    return single.eval()


def direct(module, parameters, buffers, task, k, normalization):
    """Protocol.md's definition, one network at a time, with plain autograd."""
    single = network(module, parameters, buffers, k)
    if normalization == "lipschitz":
        norms = []
        for x in task.x_test:
            x = x.unsqueeze(0).clone().requires_grad_(True)
            out = single(x)[0]
            (gradient,) = torch.autograd.grad(out[1] - out[0], x)
            norms.append(gradient.norm())
        scale = torch.stack(norms).max()
    else:
        scale = torch.tensor(1.0)
        for p in single.parameters():
            if p.dim() >= 2:
                scale = scale * p.detach().norm() / 3
    with torch.no_grad():
        logits = single(task.x_train)
    return F.cross_entropy(logits.double() / scale.double(), task.y_train).item()


CASES = [
    ("mlp", lambda shape: build_mlp(shape, width="2/6", depth=3), (1, 16, 16)),
    ("lenet", lambda shape: build_lenet(shape, width="1/6"), (1, 28, 28)),
    ("resnet4", lambda shape: build_resnet4(shape, width="1/6", depth="layer2-3"), (3, 12, 12)),
]


@pytest.mark.parametrize("name,build,shape", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("metric", ["lipschitz", "frobenius"])
def test_vectorised_metric_equals_direct_computation(name, build, shape, metric):
    torch.manual_seed(0)
    module = build(shape)
    parameters, buffers = init_stacked(module, PRIORS["kaiming-uniform"], [1, 2, 3, 4, 5], "cpu")
    if buffers:  # give BatchNorm non-trivial statistics, different per network
        for key, value in buffers.items():
            if key.endswith("running_mean"):
                buffers[key] = torch.randn_like(value) * 0.1
            elif key.endswith("running_var"):
                buffers[key] = torch.rand_like(value) + 0.5
    task = make_task(shape)
    # through the metrics hook, as the runner calls it
    values = REGISTRY.metric(f"train_loss_{metric}").compute(inputs(module, parameters, buffers, task))
    assert values.shape == (5,)
    expected = [direct(module, parameters, buffers, task, k, metric) for k in range(5)]
    torch.testing.assert_close(
        values, torch.tensor(expected, dtype=values.dtype), rtol=1e-4, atol=1e-6
    )


def test_chunking_over_networks_and_images_changes_nothing():
    module = build_mlp((1, 16, 16), width="1/6")
    parameters, buffers = init_stacked(module, PRIORS["uniform"], list(range(7)), "cpu")
    x = make_task((1, 16, 16), n_test=23).x_test
    whole = input_gradient_norms(
        module, parameters, buffers, x, models_per_call=100, images_per_call=100
    )
    pieces = input_gradient_norms(
        module, parameters, buffers, x, models_per_call=3, images_per_call=5
    )
    # Same values up to float32 summation order: a batched matmul over 3 networks and 5 images
    # may block its sums differently from one over 7 and 23 (seen on AVX2: 1 ulp, 1.1e-7 relative).
    torch.testing.assert_close(whole, pieces, rtol=1e-6, atol=0)


def test_losses_are_invariant_to_rescaling_a_layer():
    """The point of the normalizations: scaling a layer by c > 0 scales the logits, the Lipschitz
    estimate and the Frobenius product alike, so neither normalized loss moves."""
    module = build_mlp((1, 16, 16), width="2/6")
    parameters, buffers = init_stacked(module, PRIORS["uniform"], [0, 1, 2], "cpu")
    task = make_task((1, 16, 16))
    last = [n for n, p in module.named_parameters() if p.dim() >= 2][-1]
    scaled = {**parameters, last: parameters[last] * 7.0}
    for metric in (train_loss_lipschitz, train_loss_frobenius):
        torch.testing.assert_close(
            metric(inputs(module, parameters, buffers, task)), metric(inputs(module, scaled, buffers, task))
        )


def test_module_mode_is_restored():
    module = build_mlp((1, 16, 16), width="1/6").train()
    parameters, buffers = init_stacked(module, PRIORS["uniform"], [0], "cpu")
    train_loss_lipschitz(inputs(module, parameters, buffers, make_task((1, 16, 16))))
    assert module.training


def test_zero_scale_gives_nan_not_an_error():
    logits = torch.zeros(2, 4, 2, dtype=torch.float64)
    values = normalized_cross_entropy(logits, torch.tensor([0, 1, 0, 1]), torch.tensor([0.0, 1.0]))
    assert torch.isnan(values[0]) and values[1].item() == pytest.approx(
        torch.log(torch.tensor(2.0)).item()
    )


def test_frobenius_scale_skips_vectors():
    module = build_resnet4((3, 8, 8), width="1/6", depth="layer3")
    parameters, _ = init_stacked(module, PRIORS["uniform"], [0, 1], "cpu")
    weights = [n for n, p in module.named_parameters() if p.dim() >= 2]
    expected = torch.ones(2, dtype=torch.float64)
    for n in weights:
        expected = expected * parameters[n].double().flatten(1).norm(dim=1) / 3
    torch.testing.assert_close(frobenius_scale(module, parameters), expected)
