"""The diagnostics panel's metrics, vectorized over the stack, against slow and obvious
implementations: one plain nn.Module per network, Python loops, plain autograd, numpy SVDs."""

from __future__ import annotations

import contextlib
import copy
import math
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from benchsuite.architectures import build_lenet, build_mlp, build_resnet4
from benchsuite.builtins.priors import benchsuite_priors
from benchsuite.engine import native, stacked_conv
from benchsuite.engine.stacked_conv import native_margin_norms
from benchsuite.metrics import collapse, curvature, input_gradients, normalized
from benchsuite.plugins import load_registry
from benchsuite.records import MetricInput
from benchsuite.stacked import init_stacked
from benchsuite.testing import assert_conforms

PRIORS = {p.name: p for p in benchsuite_priors()}
REGISTRY = load_registry(include_entry_points=False)
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small kernels: see conftest.py
K = 4


def stacked_case(name: str, bias: bool):
    """A small MLP or LeNet with K networks that are not at initialization (so the metrics have
    something to find), and a task of its input shape."""
    if name == "mlp":
        module, shape = build_mlp((1, 12, 12), width="2/6", depth=3, bias=bias), (1, 12, 12)
    else:
        module, shape = build_lenet((1, 28, 28), width="4/6", bias=bias), (1, 28, 28)
    parameters, buffers = init_stacked(module, PRIORS["kaiming-uniform"], [11, 12, 13, 14], "cpu")
    initial, _ = init_stacked(module, PRIORS["kaiming-uniform"], [21, 22, 23, 24], "cpu")
    generator = torch.Generator().manual_seed(5)
    for key in parameters:  # move away from the prior, and give biases values
        parameters[key] = parameters[key] + 0.1 * torch.randn(parameters[key].shape, generator=generator)
    x_train = torch.randn(6, *shape, generator=generator)
    x_test = torch.randn(20, *shape, generator=generator)
    data = MetricInput(
        module=module.eval(), parameters=parameters, buffers=buffers, x_train=x_train,
        y_train=torch.arange(6) % 2, x_test=x_test, y_test=torch.arange(20) % 2, initial_parameters=initial,
    )  # fmt: skip
    return data


def network(data: MetricInput, k: int, initial: bool = False) -> nn.Module:
    """Network k of the stack as an ordinary module."""
    single = copy.deepcopy(data.module)
    source = data.initial_parameters if initial else data.parameters
    single.load_state_dict({name: value[k] for name, value in {**source, **data.buffers}.items()})
    return single.eval()


def weight_modules(single: nn.Module) -> list[nn.Module]:
    return [m for m in single.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def computed(name: str, data: MetricInput) -> torch.Tensor:
    """Through the metrics hook, as the runner calls it."""
    values = REGISTRY.metric(name).compute(data)
    assert values.shape == (K,)
    return values


CASES = [("mlp", True), ("mlp", False), ("lenet", True)]
IDS = ["mlp-bias", "mlp", "lenet-bias"]


@pytest.fixture(scope="module", params=CASES, ids=IDS)
def data(request):
    return stacked_case(*request.param)


# ---------------------------------------------------------------------------------------------
# the slow, obvious implementations


def slow_param_norm(single):
    return math.sqrt(sum(float((p.detach().double() ** 2).sum()) for p in single.parameters()))


def slow_init_distance(single, start):
    return math.sqrt(sum(float(((p.detach().double() - q.detach().double()) ** 2).sum()) for p, q in zip(single.parameters(), start.parameters())))


def slow_lipschitz(single, x_test):
    norms = []
    for x in x_test:
        x = x.unsqueeze(0).clone().requires_grad_(True)
        out = single(x)[0]
        (gradient,) = torch.autograd.grad(out[1] - out[0], x)
        norms.append(float(gradient.double().norm()))
    return max(norms)


def slow_frobenius(single):
    scale = 1.0
    for layer in weight_modules(single):
        scale *= float(layer.weight.detach().double().norm()) / 3
    return scale


def slow_min_margin(single, x_train, y_train):
    margins = []
    for x, y in zip(x_train, y_train.tolist()):
        with torch.no_grad():
            out = single(x.unsqueeze(0))[0].double()
        margins.append(float(out[y] - out[1 - y]))
    return min(margins)


def slow_geometric_complexity(single, x_train):
    total = 0.0
    for x in x_train:
        jacobian = torch.autograd.functional.jacobian(lambda image: single(image.unsqueeze(0))[0], x)
        total += float(jacobian.double().pow(2).sum())
    return total / len(x_train)


def slow_effective_rank(single):
    ranks = []
    for layer in weight_modules(single)[:-1]:
        matrix = layer.weight.detach().double().reshape(layer.weight.shape[0], -1).numpy()
        singular = np.linalg.svd(matrix, compute_uv=False)
        p = singular / singular.sum()
        entropy = -sum(v * math.log(v) for v in p if v > 0)
        ranks.append(math.exp(entropy) / min(matrix.shape))
    return sum(ranks) / len(ranks)


def slow_hessian(single, x_train, y_train) -> torch.Tensor:
    """The full Hessian of the mean training cross-entropy, one row per backward pass."""
    parameters = list(single.parameters())
    loss = F.cross_entropy(single(x_train), y_train)
    gradient = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, parameters, create_graph=True)])
    rows = []
    for i in range(gradient.numel()):
        row = torch.autograd.grad(gradient[i], parameters, retain_graph=True, allow_unused=True)
        rows.append(torch.cat([(r if r is not None else torch.zeros_like(p)).reshape(-1) for r, p in zip(row, parameters)]))
    return torch.stack(rows).double()


def slow_power_iteration(hessian, iterations):
    """As docs/diagnostics.md states it: start torch.randn(P) from seed 0, normalize, repeat."""
    v = torch.randn(hessian.shape[0], generator=torch.Generator().manual_seed(0)).double()
    v = v / v.norm()
    value = 0.0
    for _ in range(iterations):
        w = hessian @ v
        value = float(v @ w)
        v = w / w.norm()
    return value


def slow_hutchinson(hessian, probes):
    """As documented: `probes` Rademacher vectors, torch.randint(0, 2, (probes, P)) from seed 1."""
    z = 2.0 * torch.randint(0, 2, (probes, hessian.shape[0]), generator=torch.Generator().manual_seed(1)).double() - 1
    return float(sum(z[i] @ hessian @ z[i] for i in range(probes)) / probes)


def slow_predictions(single, x_test):
    with torch.no_grad():
        return [int(out[1] > out[0]) for out in single(x_test)]


# ---------------------------------------------------------------------------------------------
# each metric against its slow implementation


def test_parameter_and_layer_norms(data):
    nets = [network(data, k) for k in range(K)]
    expected = [slow_param_norm(n) for n in nets]
    torch.testing.assert_close(computed("param_norm", data), torch.tensor(expected, dtype=torch.float64))
    first = [float(weight_modules(n)[0].weight.detach().double().norm()) for n in nets]
    last = [float(weight_modules(n)[-1].weight.detach().double().norm()) for n in nets]
    torch.testing.assert_close(computed("weight_norm_input", data), torch.tensor(first, dtype=torch.float64))
    torch.testing.assert_close(computed("weight_norm_output", data), torch.tensor(last, dtype=torch.float64))


def test_distance_from_initialization(data):
    expected = [slow_init_distance(network(data, k), network(data, k, initial=True)) for k in range(K)]
    torch.testing.assert_close(computed("init_distance", data), torch.tensor(expected, dtype=torch.float64))
    sampled = MetricInput(**{**vars(data), "initial_parameters": None, "role": "baseline"})
    assert torch.isnan(computed("init_distance", sampled)).all()


@pytest.mark.parametrize("normalization", ["lipschitz", "frobenius"])
def test_normalized_margins(data, normalization):
    expected = []
    for k in range(K):
        single = network(data, k)
        scale = slow_lipschitz(single, data.x_test) if normalization == "lipschitz" else slow_frobenius(single)
        expected.append(slow_min_margin(single, data.x_train, data.y_train) / scale)
    torch.testing.assert_close(
        computed(f"margin_{normalization}", data), torch.tensor(expected, dtype=torch.float64), rtol=1e-4, atol=1e-7
    )


def test_normalized_margins_ignore_the_scale_of_a_layer(data):
    """Scaling the readout by 7 scales the logits, the Lipschitz estimate and the Frobenius product."""
    last = collapse.weight_layers(data.module)[-1][0]
    bias = collapse.weight_layers(data.module)[-1][1]
    scaled = {**data.parameters, last: 7.0 * data.parameters[last]}
    if bias is not None:
        scaled[bias] = 7.0 * data.parameters[bias]
    moved = MetricInput(**{**vars(data), "parameters": scaled})
    for name in ("margin_lipschitz", "margin_frobenius"):
        torch.testing.assert_close(computed(name, data), computed(name, moved), rtol=1e-4, atol=1e-8)  # float32 logits


LENET_VARIANTS = [("2/6", "2c-3f", True), ("1", "2c-3f", False), ("3/6", "1c-1f", True),
                  ("2/6", "2c-1f", False), ("4/6", "2c-2f", True), ("1/6", "2c-3f", True)]  # fmt: skip


def lenet_stack(width, depth, bias, count=3):
    """`count` LeNets away from the prior, and 24 images whose top rows are 0 (as Fashion-MNIST's
    background: exact max-pool ties of the first convolution's bias)."""
    module = build_lenet((1, 28, 28), width=width, depth=depth, bias=bias).eval()
    parameters, buffers = init_stacked(module, PRIORS["kaiming-uniform"], range(31, 31 + count), "cpu")
    generator = torch.Generator().manual_seed(7)
    for key in parameters:
        parameters[key] = parameters[key] + 0.1 * torch.randn(parameters[key].shape, generator=generator)
    x = torch.randn(24, 1, 28, 28, generator=generator)
    x[:, :, :8] = 0.0
    return module, parameters, buffers, x


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "written-out"])
@pytest.mark.parametrize("width,depth,bias", LENET_VARIANTS)
def test_written_out_input_gradients_equal_autograd(width, depth, bias, compiled):
    """The LeNet paths (the compiled kernel, engine.stacked_conv.native_margin_norms, and without
    it metrics/input_gradients.py) against vmapped autograd, the path they replaced, and against
    autograd on each network alone, per image."""
    module, parameters, buffers, x = lenet_stack(width, depth, bias)
    layers = input_gradients.plan(module)
    assert layers is not None and input_gradients.faster(layers)  # a LeNet path is taken
    if compiled:
        assert native.library() is not None, "setup.sh installs a C compiler; the kernel must build"
    with contextlib.nullcontext() if compiled else native.switched_off():
        taken = native_margin_norms(module, parameters, x) is not None
        assert taken == compiled
        computed_norms = normalized.input_gradient_norms(module, parameters, buffers, x)
    vmapped = normalized.vmapped_gradient_norms(module, parameters, buffers, x, 32, 512)
    torch.testing.assert_close(computed_norms, vmapped, rtol=1e-5, atol=1e-7)
    data = MetricInput(module=module, parameters=parameters, buffers=buffers, x_train=x,
                       y_train=torch.zeros(24), x_test=x, y_test=torch.zeros(24))  # fmt: skip
    for k in range(3):
        single = network(data, k)
        alone = [slow_lipschitz(single, image.unsqueeze(0)) for image in x]
        torch.testing.assert_close(computed_norms[k], torch.tensor(alone, dtype=torch.float64), rtol=1e-5, atol=1e-7)


def test_written_out_input_gradients_do_not_depend_on_the_chunks():
    """A network's norms are the same bits in any chunk of networks and images."""
    module, parameters, buffers, x = lenet_stack("2/6", "2c-3f", True, count=5)
    with native.switched_off():
        whole = normalized.input_gradient_norms(module, parameters, buffers, x)
        chunked = normalized.input_gradient_norms(
            module, parameters, buffers, x, models_per_call=2, images_per_call=10
        )  # fmt: skip
    assert torch.equal(whole, chunked)


def test_compiled_input_gradients_do_not_depend_on_threads_or_stack(monkeypatch):
    """The compiled kernel computes each network at each image alone: the same bits over any
    worker count, call size and stack (a network alone gets its norms from the whole stack)."""
    assert native.library() is not None, "setup.sh installs a C compiler; the kernel must build"
    module, parameters, buffers, x = lenet_stack("1/6", "2c-3f", True, count=11)
    one = native_margin_norms(module, parameters, x, workers=1)
    monkeypatch.setattr(stacked_conv, "MARGIN_NETWORKS_PER_CALL", 3)
    three = native_margin_norms(module, parameters, x, workers=3)
    seventh = {name: value[7:8] for name, value in parameters.items()}
    alone = native_margin_norms(module, seventh, x[5:9], workers=1)
    assert torch.equal(one, three)
    assert torch.equal(alone[0], one[7, 5:9])


def test_the_compiled_kernel_declines_what_it_cannot_take():
    """Not two logits, not float32, a strided convolution: None (the caller keeps its path)."""
    three = nn.Sequential(
        nn.Conv2d(1, 2, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2 * 12 * 12, 3)
    )  # fmt: skip
    parameters, _ = init_stacked(three, PRIORS["kaiming-uniform"], [0, 1], "cpu")
    x = torch.randn(4, 1, 28, 28)
    assert native_margin_norms(three, parameters, x) is None
    module, parameters, _, x = lenet_stack("1/6", "2c-3f", True, count=2)
    assert native_margin_norms(module, parameters, x.double()) is None
    strided = nn.Sequential(
        nn.Conv2d(1, 2, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 13 * 13, 2)
    )  # fmt: skip
    parameters, _ = init_stacked(strided, PRIORS["kaiming-uniform"], [0, 1], "cpu")
    assert native_margin_norms(strided, parameters, x) is None


def test_input_gradient_plan_declines_what_it_does_not_write_out():
    assert input_gradients.plan(build_resnet4((3, 32, 32))) is None
    padded = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 2))
    assert input_gradients.plan(padded) is None
    three_logits = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3))
    assert input_gradients.plan(three_logits) is None
    mlp = input_gradients.plan(build_mlp((1, 12, 12), width="2/6", depth=3))
    assert mlp is not None and not input_gradients.faster(mlp)  # vmap batches its matmuls better


def test_geometric_complexity(data):
    expected = [slow_geometric_complexity(network(data, k), data.x_train) for k in range(K)]
    torch.testing.assert_close(
        computed("geometric_complexity", data), torch.tensor(expected, dtype=torch.float64), rtol=1e-4, atol=1e-6
    )


def test_effective_rank(data):
    expected = [slow_effective_rank(network(data, k)) for k in range(K)]
    torch.testing.assert_close(computed("effective_rank", data), torch.tensor(expected, dtype=torch.float64))


def test_effective_rank_of_known_spectra():
    """Rank one gives 1/min(out, in); equal singular values give 1 (orthogonal rows)."""
    module = nn.Sequential(nn.Flatten(), nn.Linear(4, 4, bias=False), nn.ReLU(), nn.Linear(4, 2, bias=False))
    parameters = {
        "1.weight": torch.stack([torch.outer(torch.arange(1.0, 5.0), torch.ones(4)), torch.eye(4) * 3]),
        "3.weight": torch.ones(2, 2, 4),
    }
    data = MetricInput(module=module, parameters=parameters, buffers={}, x_train=torch.zeros(2, 4), y_train=torch.tensor([0, 1]),
                       x_test=torch.zeros(2, 4), y_test=torch.tensor([0, 1]))  # fmt: skip
    from benchsuite.metrics import effective_rank

    torch.testing.assert_close(effective_rank(data), torch.tensor([0.25, 1.0], dtype=torch.float64))


def test_disagreement_within_the_population(data):
    predictions = [slow_predictions(network(data, k), data.x_test) for k in range(K)]
    expected = []
    for k in range(K):
        shares = [
            sum(a != b for a, b in zip(predictions[k], predictions[j])) / len(predictions[k])
            for j in range(K) if j != k
        ]  # fmt: skip
        expected.append(sum(shares) / len(shares))
    torch.testing.assert_close(computed("disagreement", data), torch.tensor(expected, dtype=torch.float64))


def test_disagreement_strict_tie_rule_counts_a_tie_as_its_own_outcome():
    from benchsuite.metrics.agreement import pairwise_agreement, predictions

    logits = torch.tensor([[[0.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [1.0, 0.0]], [[0.0, 0.0], [2.0, 0.0]]])
    strict = pairwise_agreement(predictions(logits, "strict"))
    argmax = pairwise_agreement(predictions(logits, "argmax"))
    assert strict[0, 2] == 1.0 and strict[0, 1] == 0.5  # both tied on image 0: they agree
    assert argmax[0, 1] == 0.5 and argmax[0, 2] == 1.0  # argmax: the tie predicts class 0


# ---------------------------------------------------------------------------------------------
# sharpness: small networks, so that the Hessian can be formed


def small_case(name: str):
    if name == "mlp":
        module, shape = build_mlp((1, 8, 8), width="1/6", depth=2, bias=True), (1, 8, 8)
    else:
        module, shape = build_lenet((1, 28, 28), width="1/6", depth="1c-1f"), (1, 28, 28)
    parameters, buffers = init_stacked(module, PRIORS["kaiming-uniform"], [1, 2, 3], "cpu")
    generator = torch.Generator().manual_seed(3)
    parameters = {n: v + 0.05 * torch.randn(v.shape, generator=generator) for n, v in parameters.items()}
    x = torch.randn(6, *shape, generator=generator)
    return MetricInput(module=module.eval(), parameters=parameters, buffers=buffers, x_train=x, y_train=torch.arange(6) % 2,
                       x_test=x, y_test=torch.arange(6) % 2)  # fmt: skip


@pytest.mark.parametrize("name", ["mlp", "lenet"])
def test_sharpness_and_trace_equal_the_same_algorithms_on_the_formed_hessian(name):
    data = small_case(name)
    count = data.parameters[next(iter(data.parameters))].shape[0]
    hessians = [slow_hessian(network(data, k), data.x_train, data.y_train) for k in range(count)]
    top = [slow_power_iteration(h, curvature.POWER_ITERATIONS) for h in hessians]
    trace = [slow_hutchinson(h, curvature.HUTCHINSON_PROBES) for h in hessians]
    torch.testing.assert_close(REGISTRY.metric("sharpness").compute(data), torch.tensor(top, dtype=torch.float64), rtol=2e-4, atol=1e-5)
    torch.testing.assert_close(REGISTRY.metric("hessian_trace").compute(data), torch.tensor(trace, dtype=torch.float64), rtol=2e-4, atol=1e-5)


def test_power_iteration_converges_to_the_dominant_eigenvalue_and_hutchinson_to_the_trace():
    """With enough iterations and probes the estimates reach the formed Hessian's exact values
    (the panel's fixed settings trade that for cost: docs/diagnostics.md)."""
    data = small_case("mlp")
    hessians = [slow_hessian(network(data, k), data.x_train, data.y_train) for k in range(3)]
    dominant = [float(torch.linalg.eigvalsh(h)[torch.linalg.eigvalsh(h).abs().argmax()]) for h in hessians]
    products = curvature.HessianProducts(data.module, data.parameters, data.buffers, data.x_train, data.y_train)
    start = curvature.start_vector(data.module)
    values = curvature.power_iteration(products, start, 3, 500)
    torch.testing.assert_close(values, torch.tensor(dominant, dtype=torch.float64), rtol=1e-3, atol=1e-6)
    probes = curvature.rademacher_probes(data.module, probes=4000)
    estimates = torch.cat([products.probes(probes[i : i + 500]) for i in range(0, 4000, 500)], dim=1).double().mean(dim=1)
    exact = torch.tensor([float(torch.trace(h)) for h in hessians], dtype=torch.float64)
    assert ((estimates - exact).abs() <= 0.1 * exact.abs() + 1e-6).all(), (estimates, exact)


# ---------------------------------------------------------------------------------------------
# stochastic collapse


def slow_collapse(single: nn.Module) -> tuple[float, float]:
    """(vanishing share, redundant share) with loops over neurons and a union-find."""
    layers = weight_modules(single)
    vanishing = redundant = total = 0
    for layer, reader in zip(layers, layers[1:]):
        n = layer.weight.shape[0]
        incoming = []
        outgoing = []
        for j in range(n):
            w = layer.weight[j].detach().double().reshape(-1)
            if layer.bias is not None:
                w = torch.cat([w, layer.bias[j].detach().double().reshape(1)])
            incoming.append(w)
            columns = reader.weight.shape[1] // n  # a linear reader of flattened channels
            if isinstance(reader, nn.Conv2d):
                outgoing.append(reader.weight[:, j].detach().double().reshape(-1))
            else:
                outgoing.append(reader.weight[:, j * columns : (j + 1) * columns].detach().double().reshape(-1))
        largest_in = max(float(w.norm()) for w in incoming)
        largest_out = max(float(w.norm()) for w in outgoing)
        gone = [
            float(incoming[j].norm()) <= 0.05 * largest_in and float(outgoing[j].norm()) <= 0.05 * largest_out
            for j in range(n)
        ]  # fmt: skip
        vanishing += sum(gone)
        parent = list(range(n))

        def root(j):
            while parent[j] != j:
                j = parent[j]
            return j

        alive = [j for j in range(n) if not gone[j] and float(incoming[j].norm()) > 0]
        for a in alive:
            for b in alive:
                cosine = float(incoming[a] @ incoming[b] / (incoming[a].norm() * incoming[b].norm()))
                if a < b and cosine >= 0.99:
                    parent[root(a)] = root(b)
        redundant += len(alive) - len({root(j) for j in alive})
        total += n
    return vanishing / total, redundant / total


def planted(data: MetricInput) -> MetricInput:
    """Network 0: hidden neuron 1 of the first layer vanishes (along neuron 0), neurons 2 and 3 are positive
    multiples of neuron 0 (a cluster of three: two redundant). Network 1: neuron 2 is a negative
    multiple of neuron 0 (not redundant) and neuron 3 vanishes only on the way in. Network 2:
    neuron 0 of the second layer vanishes (for LeNet, a channel read through flatten)."""
    layers = collapse.weight_layers(data.module)
    (weight, bias), (reader, _) = layers[0], layers[1]
    p = {n: v.clone() for n, v in data.parameters.items()}
    w, r = p[weight], p[reader]
    columns = r.shape[2] // w.shape[1]

    def out_block(k, j):
        return r[k, :, j * columns : (j + 1) * columns] if r.dim() == 3 else r[k, :, j]

    w[0, 1] = 1e-3 * w[0, 0]  # vanishing, and parallel to neuron 0: it must not join its cluster
    out_block(0, 1).mul_(1e-3)
    w[0, 2], w[0, 3] = 2.0 * w[0, 0], 0.5 * w[0, 0]
    w[1, 2] = -1.0 * w[1, 0]
    w[1, 3] *= 1e-3
    if bias is not None:
        p[bias][0, 1] = 1e-3 * p[bias][0, 0]
        p[bias][0, 2], p[bias][0, 3] = 2.0 * p[bias][0, 0], 0.5 * p[bias][0, 0]
        p[bias][1, 2] = -1.0 * p[bias][1, 0]
        p[bias][1, 3] *= 1e-3
    (second, second_bias), (second_reader, _) = layers[1], layers[2]
    columns = p[second_reader].shape[2] // p[second].shape[1]
    p[second][2, 0] *= 1e-3
    p[second_reader][2, :, 0:columns] *= 1e-3
    if second_bias is not None:
        p[second_bias][2, 0] *= 1e-3
    return MetricInput(**{**vars(data), "parameters": p})


def test_collapse_counts_equal_the_loops(data):
    data = planted(data)
    expected = [slow_collapse(network(data, k)) for k in range(K)]
    torch.testing.assert_close(computed("vanishing_neurons", data), torch.tensor([e[0] for e in expected], dtype=torch.float64))
    torch.testing.assert_close(computed("redundant_neurons", data), torch.tensor([e[1] for e in expected], dtype=torch.float64))
    hidden = sum(layer.weight.shape[0] for layer in weight_modules(network(data, 0))[:-1])
    assert computed("vanishing_neurons", data)[0] * hidden == pytest.approx(1)
    assert computed("redundant_neurons", data)[0] * hidden == pytest.approx(2)
    assert computed("vanishing_neurons", data)[1] == 0 and computed("redundant_neurons", data)[1] == 0
    assert computed("vanishing_neurons", data)[2] * hidden == pytest.approx(1)


def test_collapse_is_undefined_where_a_neuron_has_other_readers():
    """A residual block or BatchNorm breaks the chain the definition needs: NaN, not a guess."""
    from benchsuite.architectures import build_resnet4

    module = build_resnet4((3, 12, 12), width="1/6", depth="layer2-3")
    parameters, buffers = init_stacked(module, PRIORS["kaiming-uniform"], [0, 1], "cpu")
    x = torch.randn(4, 3, 12, 12)
    data = MetricInput(module=module.eval(), parameters=parameters, buffers=buffers, x_train=x, y_train=torch.arange(4) % 2,
                       x_test=x, y_test=torch.arange(4) % 2)  # fmt: skip
    assert torch.isnan(collapse.vanishing_neurons(data)).all() and torch.isnan(collapse.redundant_neurons(data)).all()


# ---------------------------------------------------------------------------------------------
# the panel through the host


PANEL = [
    "param_norm", "weight_norm_input", "weight_norm_output", "init_distance", "margin_lipschitz",
    "margin_frobenius", "sharpness", "hessian_trace", "geometric_complexity", "effective_rank",
    "vanishing_neurons", "redundant_neurons", "disagreement",
]  # fmt: skip


@pytest.mark.parametrize("name", PANEL)
def test_every_panel_metric_passes_check_plugin(name):
    assert_conforms(name, registry=REGISTRY)


def test_the_runner_gives_optimizer_cells_their_initial_weights_and_samplers_none(tmp_path):
    """Retraining from the initial weights the runner passed reproduces the trained networks, so
    they are the real starting points; samplers get None and init_distance NaN."""
    from benchsuite.engine.batches import round_orders
    from benchsuite.engine.training import train_networks
    from benchsuite.hookspecs import hookimpl
    from benchsuite.records import MetricSpec
    from benchsuite.runner import run_suite
    from benchsuite.store import Store
    from benchsuite.suite import validate_suite

    seen = []

    def record(data):
        seen.append(data)
        return torch.zeros(next(iter(data.parameters.values())).shape[0])

    plugin = types.ModuleType("recorder")
    plugin.benchsuite_metrics = hookimpl(lambda: [MetricSpec(name="recorder", compute=record)])
    registry = load_registry(include_entry_points=False, extra=[("recorder", plugin)])
    suite = validate_suite({
        "models_per_cell": 3,
        "tasks": [{"dataset": "digits", "classes": [[0, 1]], "n_train": [4], "training_set_seeds": [200]}],
        "architectures": [{"name": "mlp", "widths": ["1/6"]}],
        "optimizers": [{"name": "sgd", "epochs": 4}], "baselines": ["gnc"],
        "metrics": ["recorder", "init_distance"],
    }, registry, "s.yaml")  # fmt: skip
    run_suite(suite, tmp_path, registry=registry)
    with Store(tmp_path / "results.sqlite", read_only=True) as store:
        cells = {c["role"]: c for c in store.cells()}
        rows = store.network_metric_rows()
    optimizer, baseline = (next(d for d in seen if d.role == role) for role in ("optimizer", "baseline"))
    assert baseline.initial_parameters is None and optimizer.initial_parameters is not None
    found_at = [r["found_at"] for r in rows if r["role"] == "optimizer" and r["metric"] == "init_distance"]
    orders = torch.stack([round_orders(cells["optimizer"]["seed"], range(a, a + 1), 4, 4, "independent")[0] for a in found_at])
    buffers = {n: v.clone() for n, v in optimizer.buffers.items()}
    trained, _ = train_networks(
        optimizer.module, optimizer.x_train, optimizer.y_train, registry.optimizer("sgd"), registry.optimizer("sgd").defaults,
        {n: v.clone() for n, v in optimizer.initial_parameters.items()}, buffers, orders, 2,
    )  # fmt: skip
    for name, value in optimizer.parameters.items():
        torch.testing.assert_close(trained[name], value)
    distances = {r["role"]: r["value"] for r in rows if r["metric"] == "init_distance"}
    assert distances["optimizer"] > 0 and distances["baseline"] is None  # NaN is stored as NULL
