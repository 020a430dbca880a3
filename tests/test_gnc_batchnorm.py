"""Guess & Check for BatchNorm networks on CPU (engine/batchnorm_gnc.py, issue 16 item 2).

The plan computes train-mode logits in another summation order than the generic vmap path, so
the claims are: (1) its logits agree with the vmap path's to float32 rounding; (2) a network's
logits do not depend on how many networks share the call, bit for bit (decisions do not depend on
the chunk size); (3) on a real task (bundled digits, ResNet4) the engine accepts the same
candidates as the vmap path: decisions agree on every candidate, and none is within float32
rounding of a tie; (4) the stored networks carry calibrate_batchnorm's buffers and fit in the
host's evaluation.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from benchsuite.architectures.resnet4 import build_resnet4
from benchsuite.batchnorm import calibrate_batchnorm
from benchsuite.builtins.priors import benchsuite_priors
from benchsuite.engine.batchnorm_gnc import BatchNormPlan
from benchsuite.engine.decisions import Decider
from benchsuite.engine.draws import generate, regenerate
from benchsuite.engine.evaluation import accuracy
from benchsuite.engine.gnc import guess_and_check
from benchsuite.engine.layout import build_layout
from benchsuite.plugins import load_registry
from benchsuite.records import DataOptions, SamplingRequest
from benchsuite.stacked import StackedForward
from benchsuite.tasks import build_task, load_splits

pytestmark = pytest.mark.usefixtures("one_torch_thread")
UNIFORM = {p.name: p for p in benchsuite_priors()}["uniform"]
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits():
    registry = load_registry(include_entry_points=False)
    spec = registry.dataset("digits")
    task = build_task(spec, load_splits(spec, DataOptions()), (7, 0), 8, 200, "cpu")
    return task.x_train, task.y_train


def vmap_logits(module, params, x):
    template = module.train()
    k = next(iter(params.values())).shape[0]
    buffers = {n: b.unsqueeze(0).expand(k, *b.shape).clone() for n, b in template.named_buffers()}
    return StackedForward(template)(params, buffers, x)


@pytest.mark.parametrize("width", [1 / 6, 1 / 2])
def test_logits_agree_with_the_vmap_path_to_rounding(width):
    x = torch.randn(12, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    module = build_resnet4((1, 16, 16), width=width)
    params = generate(build_layout(module, UNIFORM), 5, 0, 24, CPU)
    plan = BatchNormPlan.of(module, x)
    assert plan is not None
    got, expected = plan.logits(params), vmap_logits(module, params, x)
    assert got.shape == expected.shape == (24, 12, 2)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_a_network_computes_the_same_bits_in_any_chunk():
    x = torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    module = build_resnet4((1, 28, 28), width=1 / 2)
    params = generate(build_layout(module, UNIFORM), 9, 0, 40, CPU)
    plan = BatchNormPlan.of(module, x)
    full = plan.logits(params)
    for start, stop in [(0, 1), (3, 6), (5, 12), (7, 40), (11, 28)]:
        part = plan.logits({k: v[start:stop] for k, v in params.items()})
        assert torch.equal(part, full[start:stop]), (start, stop)


def test_dilated_and_strided_convolutions_match_the_vmap_path():
    x = torch.randn(6, 1, 12, 12, generator=torch.Generator().manual_seed(3))
    module = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1, bias=False), nn.BatchNorm2d(3), nn.ReLU(),
        nn.Conv2d(3, 4, 3, stride=2, dilation=2, padding=2, bias=False), nn.BatchNorm2d(4),
        nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(36, 2, bias=False),
    )  # fmt: skip
    params = generate(build_layout(module, UNIFORM), 8, 0, 5, CPU)
    plan = BatchNormPlan.of(module, x)
    assert plan is not None
    torch.testing.assert_close(plan.logits(params), vmap_logits(module, params, x), rtol=1e-4, atol=1e-5)


def test_plan_refuses_what_it_cannot_run():
    x = torch.randn(4, 1, 8, 8)
    biased = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(72, 2))
    no_batchnorm = nn.Sequential(nn.Conv2d(1, 2, 3, bias=False), nn.Flatten())
    pool_first = nn.Sequential(
        nn.MaxPool2d(2), nn.Conv2d(1, 2, 3, bias=False), nn.BatchNorm2d(2), nn.Flatten(),
        nn.Linear(8, 2, bias=False),
    )  # fmt: skip
    assert BatchNormPlan.of(biased, x) is None
    assert BatchNormPlan.of(no_batchnorm, x) is None
    assert BatchNormPlan.of(pool_first, x) is None
    assert BatchNormPlan.of(build_resnet4((1, 8, 8), width=1 / 6), x.double()) is None


def _margins(logits, y):
    """Per candidate, the smallest |l1 - l0| over the points (a tie is 0)."""
    return (logits[..., 1] - logits[..., 0]).abs().amin(dim=-1)


def test_decisions_agree_with_the_vmap_path_on_a_real_task(digits):
    """All candidates of 2,048 draws (both output swaps): the same fits; disagreements would have
    to be near-ties (margin within float32 rounding), and there are none on this fixture."""
    x, y = digits
    module = build_resnet4((1, 8, 8), width=1 / 2)
    layout = build_layout(module, UNIFORM)
    fast = Decider(module, x, y, True, False, True)
    generic = Decider(module, x, y, True, False, False)
    assert fast.batchnorm_plan is not None and generic.batchnorm_plan is None
    params = generate(layout, 11, 0, 2048, CPU)
    fits, swap_fits = fast.decide(params)
    expected_fits, expected_swap = generic.decide(params)
    disagree = (fits != expected_fits) | (swap_fits != expected_swap)
    logits = fast._logits(params, 0, fast.n)
    near_tie = _margins(logits, fast.y) <= 1e-5 * logits.abs().amax(dim=(-2, -1)).clamp_min(1)
    assert not bool((disagree & ~near_tie).any())
    assert int(disagree.sum()) == 0 and int(near_tie.sum()) == 0
    assert int(fits.sum() + swap_fits.sum()) >= 15  # the fixture accepts enough to mean something


def _request(module, x, y, **options):
    return SamplingRequest(
        module=module, x_train=x, y_train=y, prior=UNIFORM, target=12, max_candidates=20_000,
        seed=4, device="cpu", options={"reuse_nested": False, **options},
    )  # fmt: skip


def test_engine_accepts_what_the_vmap_path_accepts_with_calibrated_buffers(digits):
    x, y = digits
    module = build_resnet4((1, 8, 8), width=1 / 2)
    fast = guess_and_check(_request(module, x, y, cpu_threads=2, chunk_size=40))
    generic = guess_and_check(_request(module, x, y, fast_path=False))
    assert fast.size == 12
    assert torch.equal(fast.found_at, generic.found_at)
    assert fast.candidates_tried == generic.candidates_tried
    for name in generic.parameters:
        assert torch.equal(fast.parameters[name], generic.parameters[name])
    params, buffers = regenerate(module, UNIFORM, 4, fast.found_at, "cpu")
    calibrated = calibrate_batchnorm(module, params, buffers, x)
    for name, value in calibrated.items():
        assert torch.equal(fast.buffers[name], value), name
    assert bool((accuracy(module.eval(), fast.parameters, fast.buffers, x, y) == 1.0).all())


def test_chunk_size_and_threads_change_nothing(digits):
    x, y = digits
    module = build_resnet4((1, 8, 8), width=1 / 6)
    runs = [
        guess_and_check(_request(module, x, y, chunk_size=size, cpu_threads=threads))
        for size, threads in [("auto", 1), (6, 1), (50, 2)]
    ]
    for run in runs[1:]:
        assert torch.equal(run.found_at, runs[0].found_at)
        assert run.candidates_tried == runs[0].candidates_tried
