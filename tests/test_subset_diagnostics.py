"""The diagnostics of subset simulation (docs/samplers.md): the repeat ESS, the between-repeat
agreement of -log2 P, the step counts, and the leaderboard's reliability thresholds."""

from __future__ import annotations

import math

import pytest

from benchsuite.engine import subset
from benchsuite.leaderboard import RELIABILITY, unreliable_reasons
from benchsuite.statistics import chain_agreement, gelman_rubin, repeat_ess


def test_repeat_ess_by_hand_and_its_tie_to_rhat():
    apart = [[0.0, 0.1, 0.2], [5.0, 5.1, 5.2]]
    # W = 0.01 (each chain's variance, ddof 1); V = sample variance of the means 0.1 and 5.1 = 12.5
    assert repeat_ess(apart) == pytest.approx(2 * 0.01 / 12.5)
    # R-hat^2 = (n - 1) / n + V / W: the same information, read as a count
    assert gelman_rubin(apart) ** 2 == pytest.approx(2 / 3 + 12.5 / 0.01)
    same_means = [[0.0, 1.0, 0.0, 1.0], [1.0, 0.0, 1.0, 0.0], [0.5, 0.5, 0.0, 1.0]]
    assert repeat_ess(same_means) == 12  # capped at the networks of each repeat
    assert repeat_ess([[1.0, 2.0]]) is None


def test_chain_agreement_skips_networks_without_a_chain():
    values = [0.1, 0.2, 0.3, 5.0, 5.1, 5.2, 9.0]
    chains = [0, 0, 0, 1, 1, 1, None]
    out = chain_agreement(values, chains)
    assert out["ess_test_acc"] == pytest.approx(repeat_ess([values[:3], values[3:6]]))
    assert out["rhat_test_acc"] == pytest.approx(gelman_rubin([values[:3], values[3:6]]))
    assert chain_agreement([0.5, 0.6], [None, None]) == {}


def run(neg_log2_p: float, shares: list[float]) -> subset.SubsetRun:
    import torch

    out = subset.SubsetRun(z=torch.zeros(1, 1), log2_p_fit=-neg_log2_p, shares=shares)
    out.evaluations, out.proposals = 1000, 900
    return out


def test_between_repeat_agreement_against_the_binomial_variance():
    shares, m = [0.5, 0.5, 0.25], 100
    iid = sum((1 - p) / (m * p) for p in shares) / math.log(2) ** 2
    spread = math.sqrt(iid)  # two repeats at +-spread/sqrt(2): sample variance = iid
    runs = [run(10 + spread / math.sqrt(2), shares), run(10 - spread / math.sqrt(2), shares)]
    out = subset.diagnostics(runs, m)
    assert out["rhat_neg_log2_p"] == pytest.approx(1.0)
    assert out["ess_p_fit"] == pytest.approx(2 * m)
    assert out["neg_log2_p_fit_iid_se"] == pytest.approx(math.sqrt(iid / 2))
    assert out["evaluations"] == 2000 and out["pcn_steps"] == 1800
    wide = subset.diagnostics([run(10 + 3 * spread, shares), run(10 - 3 * spread, shares)], m)
    ratio = (6 * spread) ** 2 / 2 / iid  # observed over i.i.d. variance
    assert wide["rhat_neg_log2_p"] == pytest.approx(math.sqrt(ratio))
    assert wide["ess_p_fit"] == pytest.approx(2 * m / ratio)


def test_reliability_thresholds_mark_a_cell():
    agreeing = [0.80, 0.82, 0.81, 0.79, 0.80, 0.81, 0.82, 0.79]
    chains = [0, 0, 0, 0, 1, 1, 1, 1]
    good = {"acceptance_min": 0.2, "unique_parents_min": 0.3, "rhat_neg_log2_p": 1.5}
    assert unreliable_reasons(good, agreeing, chains) == []
    assert unreliable_reasons({}, agreeing, chains) == []  # counting samplers are never marked
    stuck = {**good, "rhat_neg_log2_p": RELIABILITY["rhat_neg_log2_p"] + 0.1}
    assert any("R-hat of -log2 P" in r for r in unreliable_reasons(stuck, agreeing, chains))
    # the repeats disagree on test accuracy: R-hat above 1.1 and an ESS far below 10% of networks
    apart = [0.60, 0.61, 0.60, 0.61, 0.90, 0.91, 0.90, 0.91]
    reasons = unreliable_reasons(good, apart, chains)
    assert any("R-hat of test accuracy" in r for r in reasons)
    assert any("ESS of test accuracy" in r for r in reasons)
