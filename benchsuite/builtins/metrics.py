"""Built-in per-network metrics: protocol.md's normalized training cross-entropies and the
implicit-bias diagnostics panel (docs/diagnostics.md).

The computations live in benchsuite.metrics (imported on first use, so listing plugins loads no
torch); this module only names them. Every metric is opt-in: a suite lists those it wants under
`metrics:`. Each description ends with its cost class (docs/diagnostics.md has the measured
seconds per 1,000 networks): cheap (the weights alone, or passes over the training set: well
under the test-set evaluation every cell already pays), moderate (one more pass over the test
set), expensive (input gradients over the whole test set, or tens of Hessian-vector products per
network: one to eight times that evaluation).
"""

from __future__ import annotations

from benchsuite import hookimpl
from benchsuite.records import MetricSpec


def _lazy(function: str):
    """compute(data) that imports benchsuite.metrics only when a metric is computed."""

    def compute(data):
        import benchsuite.metrics

        return getattr(benchsuite.metrics, function)(data)

    compute.__name__ = function
    return compute


# name: (label, description, cost class, scope)
PANEL = {
    "train_loss_lipschitz": (
        "training cross-entropy, logits / Lipschitz estimate",
        "training cross-entropy of the logits divided by max over test images of ||d(f1 - f0)/dx||_2 "
        "(Peleg & Hein's Lipschitz normalization)", "expensive",
    ),
    "train_loss_frobenius": (
        "training cross-entropy, logits / prod ||W_l||_F / 3",
        "training cross-entropy of the logits divided by prod_l ||W_l||_F / 3 (Peleg & Hein's "
        "weight-norm normalization)", "cheap",
    ),
    "param_norm": ("||theta||_2", "Euclidean norm of all parameters together", "cheap"),
    "weight_norm_input": ("||W_1||_F", "Frobenius norm of the first weight tensor (the layer that sees the image)", "cheap"),
    "weight_norm_output": ("||W_L||_F", "Frobenius norm of the last weight tensor (the readout to the logits)", "cheap"),
    "init_distance": (
        "||theta - theta_0||_2",
        "distance from initialization over all parameters (gradient methods; NaN for random interpolators)", "cheap",
    ),
    "margin_lipschitz": (
        "min training margin / Lipschitz estimate",
        "smallest training margin f_y - f_(1-y) divided by max over test images of ||d(f1 - f0)/dx||_2", "expensive",
    ),
    "margin_frobenius": (
        "min training margin / prod ||W_l||_F / 3",
        "smallest training margin f_y - f_(1-y) divided by prod_l ||W_l||_F / 3", "cheap",
    ),
    "sharpness": (
        "top Hessian eigenvalue of the training loss",
        "top eigenvalue of the Hessian of the mean training cross-entropy, 20 power iterations on "
        "Hessian-vector products from a seeded start (seed 0)", "expensive",
    ),
    "hessian_trace": (
        "Hessian trace of the training loss",
        "trace of the Hessian of the mean training cross-entropy, Hutchinson's estimator with 32 "
        "seeded Rademacher probes (seed 1)", "expensive",
    ),
    "geometric_complexity": (
        "mean ||df/dx||_F^2 over training images",
        "geometric complexity: mean over the training images of the squared Frobenius norm of the "
        "logits' input Jacobian", "cheap",
    ),
    "effective_rank": (
        "effective rank / full rank, hidden layers",
        "exp of the entropy of the normalized singular values of each hidden weight matrix, over "
        "min(out, in), averaged over the hidden layers", "cheap",
    ),
    "vanishing_neurons": (
        "share of vanishing hidden neurons",
        "share of hidden neurons whose incoming and outgoing weight norms are both <= 0.05 of the "
        "layer's largest (stochastic collapse)", "cheap",
    ),
    "redundant_neurons": (
        "share of redundant hidden neurons",
        "share of hidden neurons that merging clusters of parallel incoming weights (cosine >= 0.99) "
        "would remove (stochastic collapse)", "cheap",
    ),
    "disagreement": (
        "test disagreement with own population",
        "mean share of test images on which the network and another of its own population predict "
        "differently", "moderate", "population",
    ),
}


def metric_specs() -> list[MetricSpec]:
    return [
        MetricSpec(
            name=name, compute=_lazy(name), label=label, description=f"{description} [{cost}]",
            scope=rest[0] if rest else "network",
        )
        for name, (label, description, cost, *rest) in PANEL.items()
    ]


@hookimpl
def benchsuite_metrics():
    return metric_specs()
