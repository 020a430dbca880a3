"""The tie rule (suite key `tie_rule`): the reference's argmax (a tie predicts class 0) and the
strict rule (a tie is wrong), in every decision G&C, training and evaluation make.

The networks here are narrow bias-free ReLU MLPs whose last hidden layer has two units: wherever
both are dead, both logits are 0, so ties are common (most argmax fits have one) and the two
rules' acceptance rates differ by a factor of about four.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
from torch import nn

from benchsuite.builtins.priors import benchsuite_priors
from benchsuite.engine.gnc import guess_and_check
from benchsuite.records import SamplingRequest
from benchsuite.stacked import accuracy, correct_counts, draw_parameters_, evaluate, tie_counts

PRIORS = {p.name: p for p in benchsuite_priors()}
CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small kernels: see conftest.py


def narrow_mlp() -> nn.Sequential:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(16, 3, bias=False),
        nn.ReLU(),
        nn.Linear(3, 2, bias=False),
        nn.ReLU(),
        nn.Linear(2, 2, bias=False),
    )


def data(n: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 4, 4, generator=generator), torch.arange(n) % 2


def reference_fits(logits: torch.Tensor, y: torch.Tensor, rule: str) -> bool:
    """The decision written independently: torch.argmax as the reference code calls it, or two
    explicit strict comparisons."""
    if rule == "argmax":
        return bool((logits.argmax(dim=-1) == y).all())
    right_one = (y == 1) & (logits[:, 1] > logits[:, 0])
    right_zero = (y == 0) & (logits[:, 0] > logits[:, 1])
    return bool((right_one | right_zero).all())


def test_correct_counts_under_each_rule():
    logits = torch.tensor([[[0.0, 0.0], [1.0, 2.0], [2.0, 1.0], [3.0, 3.0]]])
    labels = torch.tensor([0, 1, 0, 1])
    assert correct_counts(logits, labels, "argmax").tolist() == [3]  # tie at label 0 is right
    assert correct_counts(logits, labels, "strict").tolist() == [2]
    # the output swap reads (l1, l0): the same as exchanging the columns
    swapped = logits.flip(-1)
    for rule in ("argmax", "strict"):
        assert torch.equal(
            correct_counts(logits, labels, rule, swapped=True), correct_counts(swapped, labels, rule)
        )
    assert tie_counts(logits).tolist() == [2]
    with pytest.raises(ValueError, match="tie rule"):
        correct_counts(logits, labels, "coin")


def test_a_nan_logit_is_never_right():
    logits = torch.tensor([[[float("nan"), 0.0], [0.0, float("nan")]]])
    for rule in ("argmax", "strict"):
        assert correct_counts(logits, torch.tensor([0, 1]), rule).tolist() == [0]


def test_test_accuracy_gives_ties_to_class_zero_under_argmax():
    module = nn.Sequential(nn.Flatten(), nn.Linear(16, 2, bias=False))
    parameters = {"1.weight": torch.zeros(1, 2, 16)}  # constant zero output: a tie everywhere
    x, y = data(10)
    argmax_accuracy, ties = evaluate(module, parameters, {}, x, y, "argmax")
    assert argmax_accuracy.item() == pytest.approx(0.5) and ties.tolist() == [10]
    assert accuracy(module, parameters, {}, x, y, "strict").item() == 0.0


@functools.cache
def monte_carlo(rule: str, trials: int, seed: int) -> tuple[int, int]:
    x, y = data(4)
    return monte_carlo_rate(narrow_mlp(), x, y, rule, trials, seed)


def monte_carlo_rate(module, x, y, rule: str, trials: int, seed: int) -> tuple[int, int]:
    """(fits, fits with a tied training point) among networks drawn one at a time."""
    generator = torch.Generator().manual_seed(seed)
    fits = tied = 0
    with torch.no_grad():
        for _ in range(trials):
            parameters = draw_parameters_(module, PRIORS["uniform"], generator)
            logits = torch.func.functional_call(module, parameters, (x,))
            if reference_fits(logits, y, rule):
                fits += 1
                tied += bool((logits[:, 0] == logits[:, 1]).any())
    return fits, tied


def sample(module, x, y, rule, target, seed=5, **options):
    options.setdefault("reuse_nested", False)
    return guess_and_check(
        SamplingRequest(
            module=module, x_train=x, y_train=y, prior=PRIORS["uniform"], target=target,
            max_candidates=10**7, seed=seed, device=CPU, options=options, tie_rule=rule,
        )
    )


@pytest.mark.parametrize("rule", ["argmax", "strict"])
@pytest.mark.parametrize("options", [{}, {"output_swap": False}, {"early_rejection": True}])
def test_gnc_rate_matches_independent_monte_carlo_under_each_rule(rule, options):
    module = narrow_mlp()
    x, y = data(4)
    trials = 4000
    fits, tied = monte_carlo(rule, trials, seed=2024)
    population = sample(module, x, y, rule, target=300, **options)
    p_gc = population.size / population.candidates_tried
    p_mc = fits / trials
    pooled = (fits + population.size) / (trials + population.candidates_tried)
    se = math.sqrt(pooled * (1 - pooled) * (1 / trials + 1 / population.candidates_tried))
    assert abs(p_gc - p_mc) / se < 4.0, (rule, p_gc, p_mc)
    odd = int((population.found_at % 2).sum())  # accepted through the output swap
    if options.get("output_swap", True):
        # S preserves the prior, so swapped and unswapped candidates fit equally often
        assert abs(odd - population.size / 2) < 4 * math.sqrt(population.size / 4), odd
    else:
        assert odd == 0
    # every accepted network fits by the independent decision, and the host agrees
    assert bool((accuracy(module, population.parameters, population.buffers, x, y, rule) == 1).all())
    for k in range(population.size):
        single = {name: value[k] for name, value in population.parameters.items()}
        logits = torch.func.functional_call(module, single, (x,))
        assert reference_fits(logits, y, rule)
    if rule == "argmax":  # the case the issue found: many fits have a tied training point
        assert tied / fits > 0.2


def test_the_rules_differ_here():
    """Guard for the test above: on this module the two rules give clearly different rates."""
    argmax_fits, _ = monte_carlo("argmax", 4000, seed=2024)
    strict_fits, _ = monte_carlo("strict", 4000, seed=2024)
    assert argmax_fits > 2 * strict_fits > 0


def test_strict_acceptances_are_the_argmax_ones_without_ties():
    """Same seed, same candidates: strict accepts exactly the argmax fits that have no tie."""
    module = narrow_mlp()
    x, y = data(4)
    strict = sample(module, x, y, "strict", target=60)
    loose = sample(module, x, y, "argmax", target=400)
    assert loose.candidates_tried > strict.candidates_tried
    window = [int(c) for c in loose.found_at if c < strict.candidates_tried]
    _, ties = evaluate(module, loose.parameters, loose.buffers, x, y, "argmax")
    tie_free = [int(c) for c, t in zip(loose.found_at, ties) if c < strict.candidates_tried and t == 0]
    assert strict.found_at.tolist() == tie_free
    assert len(window) > len(tie_free)  # some argmax fits in that window had ties


def test_output_swap_is_off_without_a_label_one_point():
    """Proof step (3) needs a label-1 point under argmax: all-tie draws would fit both ways."""
    module = narrow_mlp()
    x, _ = data(4)
    y = torch.zeros(4, dtype=torch.long)
    population = sample(module, x, y, "argmax", target=30)
    assert bool((population.found_at % 2 == 0).all())
    assert population.candidates_tried == int(population.found_at[-1]) // 2 + 1
