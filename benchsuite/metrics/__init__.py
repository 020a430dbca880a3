"""The built-in per-network metrics' computations (named by benchsuite.builtins.metrics).

Each maps a MetricInput (module, stacked parameters and buffers, task tensors) to a tensor [K],
one value per stacked network, vectorized over the stack with batched tensor operations and
torch.func; the runner computes them after it has checked interpolation. docs/diagnostics.md
defines each one, with its settings and its cost.

- normalized: protocol.md's normalized training cross-entropies and the normalized margins;
- weights: parameter and layer norms, distance from initialization, effective rank;
- collapse: vanishing and redundant hidden neurons (stochastic collapse);
- curvature: top Hessian eigenvalue and Hessian trace of the training loss;
- geometry: geometric complexity (input Jacobians of the logits);
- agreement: test-prediction disagreement within a population.
"""

from benchsuite.metrics.agreement import disagreement
from benchsuite.metrics.collapse import redundant_neurons, vanishing_neurons
from benchsuite.metrics.curvature import hessian_trace, sharpness
from benchsuite.metrics.geometry import geometric_complexity
from benchsuite.metrics.normalized import (
    frobenius_scale,
    input_gradient_norms,
    lipschitz_estimate,
    margin_frobenius,
    margin_lipschitz,
    normalized_cross_entropy,
    train_logits,
    train_loss_frobenius,
    train_loss_lipschitz,
)
from benchsuite.metrics.weights import (
    effective_rank,
    init_distance,
    param_norm,
    weight_norm_input,
    weight_norm_output,
)

__all__ = [
    "disagreement", "effective_rank", "frobenius_scale", "geometric_complexity", "hessian_trace",
    "init_distance", "input_gradient_norms", "lipschitz_estimate", "margin_frobenius",
    "margin_lipschitz", "normalized_cross_entropy", "param_norm", "redundant_neurons", "sharpness",
    "train_logits", "train_loss_frobenius", "train_loss_lipschitz", "vanishing_neurons",
    "weight_norm_input", "weight_norm_output",
]  # fmt: skip
