"""A small suite runs zoo optimizers beside SGD and Guess & Check, end to end: validated from a
suite document, trained by the host, every network checked and stored."""

from __future__ import annotations

import pytest

from benchsuite.plugins import default_registry
from benchsuite.runner import run_suite
from benchsuite.store import Store
from benchsuite.suite import validate_suite

pytest.importorskip("benchsuite_zoo", reason="benchsuite-zoo is not installed (scripts/setup.sh installs it)")


def test_a_small_suite_runs_zoo_optimizers_beside_sgd_and_gnc(tmp_path):
    document = {
        "name": "zoo-smoke",
        "seed": 0,
        "device": "cpu",
        "models_per_cell": 2,
        "tasks": [{"dataset": "digits", "classes": [[0, 1]], "n_train": [4], "training_set_seeds": [200]}],
        "architectures": [{"name": "mlp", "widths": ["1/6"], "depths": [4]}],
        "optimizers": [
            {"name": "sgd", "epochs": 20},
            {"name": "adabelief", "epochs": 20, "lr": 0.01},
            {"name": "lamb", "epochs": 20, "lr": 0.01},
        ],
        "baselines": [{"name": "gnc", "max_candidates": 2_000_000}],
    }
    suite = validate_suite(document, default_registry(), "zoo-smoke.yaml")
    rows = run_suite(suite, tmp_path)
    assert {row["optimizer"] for row in rows} >= {"sgd", "adabelief", "lamb"}
    with Store(tmp_path / "results.sqlite", read_only=True) as store:
        cells = {cell["optimizer"]: cell for cell in store.cells()}
        networks = store.network_rows()
    assert set(cells) == {"sgd", "adabelief", "lamb", "gnc"}
    assert "benchsuite-zoo" in cells["lamb"]["plugins"]
    assert all(row["train_acc"] == 1.0 for row in networks)
