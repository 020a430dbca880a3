"""Built-in per-network metrics: protocol.md's normalized training cross-entropies.

The computations live in benchsuite.metrics (imported on first use, so listing plugins loads no
torch); this module only names them.
"""

from __future__ import annotations

from benchsuite import hookimpl
from benchsuite.records import MetricSpec


def _train_loss_lipschitz(data):
    from benchsuite.metrics import train_loss_lipschitz

    return train_loss_lipschitz(data)


def _train_loss_frobenius(data):
    from benchsuite.metrics import train_loss_frobenius

    return train_loss_frobenius(data)


@hookimpl
def benchsuite_metrics():
    return [
        MetricSpec(
            name="train_loss_lipschitz",
            compute=_train_loss_lipschitz,
            label="training cross-entropy, logits / Lipschitz estimate",
            description="training cross-entropy of the logits divided by max over test images of "
            "||d(f1 - f0)/dx||_2 (Peleg & Hein's Lipschitz normalization)",
        ),
        MetricSpec(
            name="train_loss_frobenius",
            compute=_train_loss_frobenius,
            label="training cross-entropy, logits / prod ||W_l||_F / 3",
            description="training cross-entropy of the logits divided by prod_l ||W_l||_F / 3 "
            "(Peleg & Hein's weight-norm normalization)",
        ),
    ]
