"""Function-space disagreement within a population: how differently its networks classify the
test set.

For network k: the mean over the other networks j of its population of the share of test images
on which k and j predict differently. Predictions follow the suite's tie rule ("argmax": equal
logits predict class 0; "strict": equal logits are a third outcome, no class). A population of one
network has no other: NaN. This is the one built-in metric whose value depends on the other
networks, by definition (MetricSpec.scope "population"); it is computed on the whole population.

Disagreement with the baseline's population is not a stored metric: a cell runs alone (executors
may run cells anywhere, in any order), so an optimizer's cell never sees the baseline's networks,
and the store keeps no test predictions (docs/diagnostics.md says what would be needed).
"""

from __future__ import annotations

import torch

from benchsuite.metrics.common import stacked_logits
from benchsuite.records import MetricInput

TIE = 2  # the third outcome of the strict tie rule


def predictions(logits: torch.Tensor, tie_rule: str) -> torch.Tensor:
    """Predicted class per network and image, [K, B]: 0, 1 or TIE (strict rule, equal logits)."""
    ones = logits[..., 1] > logits[..., 0]
    predicted = ones.long()
    if tie_rule == "strict":
        predicted = torch.where(logits[..., 1] == logits[..., 0], TIE, predicted)
    elif tie_rule != "argmax":
        raise ValueError(f"unknown tie rule {tie_rule!r}")
    return predicted


def pairwise_agreement(predicted: torch.Tensor) -> torch.Tensor:
    """[K, K]: share of images on which networks i and j predict the same."""
    outcomes = torch.nn.functional.one_hot(predicted, TIE + 1).double()  # [K, B, 3]
    return torch.einsum("ibc,jbc->ij", outcomes, outcomes) / predicted.shape[1]


def disagreement(data: MetricInput) -> torch.Tensor:
    """Mean test-prediction disagreement of each network with the others of its population: [K]."""
    logits = stacked_logits(data.module, data.parameters, data.buffers, data.x_test)
    agreement = pairwise_agreement(predictions(logits, data.tie_rule))
    k = agreement.shape[0]
    if k < 2:
        return torch.full((k,), torch.nan, dtype=torch.float64, device=agreement.device)
    others = 1.0 - agreement
    return (others.sum(dim=1) - others.diagonal()) / (k - 1)
