"""G&C's CPU fast path for a leading Linear layer (engine/leading_linear.py): same numbers, same
decisions, same bits as generating every weight first; and the pinned draws of a fixed seed."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from torch import nn

from benchsuite.builtins.priors import benchsuite_priors
from benchsuite.engine import gnc
from benchsuite.engine import random as rng
from benchsuite.engine.decisions import Decider
from benchsuite.engine.draws import generate
from benchsuite.engine.gnc import guess_and_check
from benchsuite.engine.layout import build_layout
from benchsuite.engine.leading_linear import LeadingLinear, folding_factor
from benchsuite.records import SamplingRequest

PRIORS = {p.name: p for p in benchsuite_priors()}
CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def paper_mlp():
    layers = [nn.MaxPool2d(2), nn.Flatten()]
    width = 196
    for out in (120, 60, 30, 12):
        layers += [nn.Linear(width, out, bias=False), nn.ReLU()]
        width = out
    return nn.Sequential(*layers, nn.Linear(width, 2, bias=False))


def data(n, seed):
    x = torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))
    return x, torch.arange(n) % 2


def digest(parameters: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(parameters):
        h.update(name.encode())
        h.update(parameters[name].contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


# Measured on commit 5b6999f (before engine/leading_linear.py existed): the uniform prior takes
# the folded path, kaiming-uniform the direct conversion, kaiming-normal draws.convert_cpu.
PINNED = {
    "uniform": ([1, 1237, 1552, 1867, 2020, 2080], 2081, "2560fbd28f21590c"),
    "kaiming-uniform": ([1, 1237, 1552, 1867, 2020, 2080], 2081, "e00282903ff7feb0"),
    "kaiming-normal": ([1122, 1866, 2237, 2683, 3422, 3449], 3450, "d64a97afa5bc3ff2"),
}


@pytest.mark.parametrize("prior", sorted(PINNED))
@pytest.mark.parametrize("threads", [1, 2])
def test_pinned_networks_and_indices(prior, threads):
    x, y = data(6, seed=11)
    request = SamplingRequest(
        module=paper_mlp(), x_train=x, y_train=y, prior=PRIORS[prior], target=6,
        max_candidates=10**6, seed=2024, device=CPU,
        options={"reuse_nested": False, "cpu_threads": threads},
    )  # fmt: skip
    population = guess_and_check(request)
    found_at, tried, parameters = PINNED[prior]
    assert population.found_at.tolist() == found_at
    assert population.candidates_tried == tried
    assert digest(population.parameters) == parameters


def _fused_and_plain(prior: str, x: torch.Tensor, count: int = 23, first_draw: int = 5):
    module = paper_mlp()
    layout = build_layout(module, PRIORS[prior])
    decider = Decider(module, x, torch.arange(x.shape[0]) % 2, False, False)
    leading = LeadingLinear(layout, decider.plan, decider.features, decider.names)
    params, first = leading.generate(77, first_draw, count)
    plain = generate(layout, 77, first_draw, count, CPU, set(decider.names))
    expected = decider.plan.first_layer(plain[decider.names[0]], decider.features)
    return leading, params, first, plain, expected


@pytest.mark.parametrize("prior", ["uniform", "uniform-0.2", "kaiming-uniform", "kaiming-normal"])
def test_fused_generation_gives_the_same_bits(prior):
    """Later layers' weights and the leading layer's product equal generating every weight and
    multiplying afterwards, bit for bit (23 draws: more than one piece, a partial last one)."""
    x, _ = data(8, seed=3)
    leading, params, first, plain, expected = _fused_and_plain(prior, x)
    assert (leading.fold is not None) == (prior == "uniform")
    assert leading.piece < 23
    assert torch.equal(first, expected)
    assert set(params) == set(plain) - {leading.first.name}
    for name in params:
        assert torch.equal(params[name], plain[name])


@pytest.mark.parametrize("exponent", [-60, -40, -20, 0, 20, 40, 60])
def test_folded_scale_is_exact_at_the_edges_of_its_range(exponent):
    """Features spanning [2**exponent / 2**12, 2**exponent] (within folding_factor's bounds):
    the folded product is still the plain product's bits."""
    x, _ = data(8, seed=4)
    x = x.sign() * 2.0 ** (
        exponent - 12 * torch.rand(x.shape, generator=torch.Generator().manual_seed(5))
    )
    x = x.clamp(-(2.0**60), 2.0**60)
    x = torch.where(x.abs() < 2.0**-60, torch.zeros_like(x), x)
    leading, _, first, _, expected = _fused_and_plain("uniform", x)
    assert leading.fold is not None
    assert torch.equal(first, expected)


def test_folding_is_refused_where_it_is_not_proven():
    module = paper_mlp()
    first = build_layout(module, PRIORS["uniform"]).entries[0]
    features = torch.randn(4, 196)
    assert folding_factor(first, features) == 2.0**-24
    assert folding_factor(build_layout(module, PRIORS["uniform-0.2"]).entries[0], features) is None
    assert (
        folding_factor(build_layout(module, PRIORS["kaiming-normal"]).entries[0], features) is None
    )
    for bad in (2.0**-70, 2.0**70, float("inf"), float("nan")):
        odd = features.clone()
        odd[1, 3] = bad
        assert folding_factor(first, odd) is None
    zeros = features.clone()
    zeros[0] = 0.0  # exact zeros are fine
    assert folding_factor(first, zeros) == 2.0**-24


def test_numpy_conversion_matches_the_torch_reference():
    words = rng.numpy_words(9, 0, 3, 400)
    words[0, :4] = [0, (1 << 64) - 1, 1 << 40, (1 << 63) - 1]
    expected = rng.symmetric_uniform_from_words(torch.from_numpy(words.view(np.int64)), 0.3)
    t = rng.odd_integers_in_place(words.copy())
    out = np.empty(t.shape, np.float32)
    rng.uniform_from_odd(t, np.float32(0.3 * 2.0**-24), out)
    assert torch.equal(torch.from_numpy(out), expected)


@pytest.mark.parametrize("target", [1, 5, 40])
def test_batched_confirmation_accepts_what_per_chunk_confirmation_does(target, monkeypatch):
    """Found candidates are confirmed in batches of CONFIRM_BATCH: the same networks, counts and
    final progress as confirming after every chunk (CONFIRM_BATCH = 1), targets reached within a
    batch or not at all (budget)."""
    x, y = data(6, seed=11)

    def run():
        calls = []
        request = SamplingRequest(
            module=paper_mlp(), x_train=x, y_train=y, prior=PRIORS["uniform"], target=target,
            max_candidates=9000, seed=2024, device=CPU,
            options={"reuse_nested": False, "chunk_size": 64},
            progress=lambda found, tried: calls.append((found, tried)),
        )  # fmt: skip
        return guess_and_check(request), calls

    batched, batched_calls = run()
    monkeypatch.setattr(gnc, "CONFIRM_BATCH", 1)
    every_chunk, every_calls = run()
    assert torch.equal(batched.found_at, every_chunk.found_at)
    assert batched.candidates_tried == every_chunk.candidates_tried
    assert batched.exhausted == every_chunk.exhausted == (target == 40)
    assert batched_calls[-1] == every_calls[-1] == (batched.size, batched.candidates_tried)
