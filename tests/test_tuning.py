"""The tuning protocol (docs/tuning.md): declared in the suite, the same for every optimizer,
values chosen per cell on a validation split of its own held-out images (never its training set,
never the test split), reproducible, the chosen value the best trial by the stated criterion, and
every trial stored. Suites without `tuning` resolve as before (tests/test_suite_ids.py pins them).
"""

from __future__ import annotations

import copy
import json

import pytest
import torch

from benchsuite.errors import SuiteError
from benchsuite.plugins import load_registry
from benchsuite.resolved import expand
from benchsuite.runner import run_suite
from benchsuite.store import Store
from benchsuite.suite import validate_suite
from benchsuite.tasks import (
    build_task,
    build_validation,
    load_splits,
    training_indices,
    validation_indices,
)
from benchsuite.tuning import Trial, choose, tune_cell, unit_points

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REGISTRY = load_registry(include_entry_points=False)
TUNED = {
    "name": "tuned",
    "seed": 3,
    "device": "cpu",
    "models_per_cell": 2,
    "tasks": [{"dataset": "digits", "classes": [[3, 8]], "n_train": [4], "training_set_seeds": [200, 201]}],
    "architectures": [{"name": "mlp", "widths": ["1/6"], "depths": [4]}],
    "optimizers": [
        {"name": "sgd", "epochs": 10},
        {"name": "sam", "epochs": 10, "tune": ["lr", "rho"]},
        {"name": "adam", "epochs": 10, "tune": []},
    ],
    "baselines": [{"name": "gnc", "max_candidates": 1_000_000}],
    "tuning": {"trials": 3, "networks": 2},
}


def suite_of(document=TUNED, **changes):
    document = copy.deepcopy(document)
    document.update(changes)
    return validate_suite(document, REGISTRY, "tuned.yaml")


# ---------------------------------------------------------------------------------------------
# The suite


def test_a_suite_without_tuning_resolves_as_before():
    untuned = {k: v for k, v in TUNED.items() if k != "tuning"}
    untuned["optimizers"] = [{"name": "sgd", "epochs": 10}]
    resolved = suite_of(untuned).resolved
    assert "tuning" not in resolved and "tuned" not in resolved["optimizers"][0]
    assert resolved["optimizers"][0]["hyperparameters"]["lr"] == 0.01
    assert all(cell.tuning is None and "tuning" not in cell.identity for cell in expand(suite_of(untuned)))


def test_the_protocol_is_resolved_with_every_default_and_round_trips():
    suite = suite_of()
    assert suite.resolved["tuning"] == {
        "trials": 3, "hyperparameters": ["lr"], "networks": 2, "validation_per_class": None,
        "seed": 3, "min_fit": 0.5, "criterion": "validation_accuracy",
    }  # fmt: skip
    sgd, sam, adam = suite.resolved["optimizers"]
    assert sgd["tuned"] == {"lr": {"low": 1e-5, "high": 1.0, "scale": "log"}} and "lr" not in sgd["hyperparameters"]
    assert list(sam["tuned"]) == ["lr", "rho"] and "rho" not in sam["hyperparameters"]
    assert "tuned" not in adam and adam["hyperparameters"]["lr"] == 0.001
    again = validate_suite(suite.as_document(), REGISTRY, "again.yaml")
    assert again.suite_id == suite.suite_id


@pytest.mark.parametrize(
    "change, key, message",
    [
        ({"tuning": {"trials": 0}}, "tuning.trials", ">= 1"),
        ({"tuning": {"hyperparameters": ["lr", "momentum", "weight_decay"]}}, "tuning.hyperparameters", "at most 2"),
        ({"tuning": {"validation_per_class": 17}}, "tuning.validation_per_class", "digits holds out 16"),
        ({"tuning": {"min_fit": 2}}, "tuning.min_fit", "[0, 1]"),
        ({"tuning": {"criterion": "loss"}}, "tuning.criterion", "validation_accuracy"),
        ({"optimizers": [{"name": "sgd", "lr": 0.1}]}, "optimizers[0].lr", "lr is tuned"),
        ({"optimizers": [{"name": "sgd", "grid": {"lr": [0.1, 0.2]}}]}, "optimizers[0].lr", "lr is tuned"),
        ({"optimizers": [{"name": "sgd", "tune": ["nesterov"]}]}, "optimizers[0].tune", "no search space"),
        ({"optimizers": [{"name": "sgd", "tune": ["lrr"]}]}, "optimizers[0].tune", "did you mean 'lr'"),
        ({"tuning": None, "optimizers": [{"name": "sgd", "tune": ["lr"]}]}, "optimizers[0].tune", "needs the suite's `tuning`"),
        ({"baselines": [{"name": "gnc", "tune": ["lr"]}]}, "baselines[0]", "unknown key"),
    ],
)
def test_mistakes_in_the_protocol_stop_validation_in_one_line(change, key, message):
    document = {**copy.deepcopy(TUNED), **change}
    if document.get("tuning") is None:
        document.pop("tuning")
    with pytest.raises(SuiteError) as raised:
        validate_suite(document, REGISTRY, "tuned.yaml")
    assert key in str(raised.value) and message in str(raised.value)


def test_a_tuned_cells_identity_names_the_protocol_not_the_value():
    cells = [c for c in expand(suite_of()) if c.entry.name == "sgd"]
    cell = cells[0]
    assert cell.tuned and "lr" not in cell.identity["method"]["hyperparameters"]
    assert cell.identity["tuning"]["search"] == {"lr": {"low": 1e-5, "high": 1.0, "scale": "log"}}
    chosen = cell.with_values({"lr": 0.3})
    assert chosen.entry.hyperparameters["lr"] == 0.3
    assert (chosen.cell_id, chosen.seed) == (cell.cell_id, cell.seed)
    more_trials = next(c for c in expand(suite_of(tuning={"trials": 4, "networks": 2})) if c.entry.name == "sgd")
    assert more_trials.cell_id != cell.cell_id  # another protocol is another experiment
    with pytest.raises(ValueError, match="not tuned"):
        cell.with_values({"momentum": 0.9})


# ---------------------------------------------------------------------------------------------
# The trial values and the criterion


def test_trial_points_are_a_latin_hypercube_repeatable_from_the_seed():
    points = unit_points(8, 2, seed=5)
    assert points == unit_points(8, 2, seed=5) and points != unit_points(8, 2, seed=6)
    for axis in range(2):
        assert sorted(int(p[axis] * 8) for p in points) == list(range(8))  # one per slice


def test_every_optimizer_tries_the_same_points_in_its_own_space():
    from benchsuite.tuning import trial_values

    suite = suite_of(tuning={"trials": 5})
    sgd, sam = suite.optimizers[0], suite.optimizers[1]
    first = trial_values(suite.tuning, sgd.tuned, {"lr": float})
    second = trial_values(suite.tuning, {"lr": {"low": 1e-3, "high": 10.0, "scale": "log"}}, {"lr": float})
    for a, b in zip(first, second):  # the same unit point, in log space
        u_a = (torch.tensor(a["lr"]).log() - torch.tensor(1e-5).log()) / (torch.tensor(1.0).log() - torch.tensor(1e-5).log())
        u_b = (torch.tensor(b["lr"]).log() - torch.tensor(1e-3).log()) / (torch.tensor(10.0).log() - torch.tensor(1e-3).log())
        assert float(u_a) == pytest.approx(float(u_b), abs=1e-3)
    assert all(1e-5 <= v["lr"] <= 1.0 for v in first)
    two = trial_values(suite.tuning, sam.tuned, {"lr": float, "rho": float})
    assert [v["lr"] for v in two] != [v["lr"] for v in first]  # a 2-D hypercube is another design
    assert all(0.01 <= v["rho"] <= 2.0 for v in two)


def trial(index, fitted, accuracy, networks=4):
    return Trial(index, {"lr": index / 10}, networks, fitted, accuracy, 0.0)


def test_the_criterion_best_validation_accuracy_among_trials_that_interpolate():
    trials = [trial(0, 4, 0.80), trial(1, 1, 0.99), trial(2, 3, 0.85), trial(3, 4, 0.85)]
    assert choose(trials, min_fit=0.5) == 2  # trial 1 rarely fits; 2 and 3 tie: the earlier
    assert choose(trials, min_fit=0.0) == 1
    nobody = [trial(0, 0, None), trial(1, 1, 0.7), trial(2, 1, 0.9)]
    assert choose(nobody, min_fit=0.5) == 2  # none eligible: most fitted, then accuracy


# ---------------------------------------------------------------------------------------------
# The validation split


def test_the_validation_split_is_held_out_disjoint_from_training_and_test():
    spec = REGISTRY.dataset("digits")
    splits = load_splits(spec)
    for pair in ([3, 8], [0, 1], [5, 9]):
        for seed in (200, 201, 202, 203):
            for draw, pair_seed in (("reference", None), ("per-class", None), ("reference", 202)):
                options = {"draw": draw, "test_labels": splits.test_labels, "class_pair_seed": pair_seed}
                validation = validation_indices(splits.train_labels, pair, seed, spec.holdout_per_class, **options)
                largest = training_indices(splits.train_labels, pair, 32, seed, spec.holdout_per_class, **options)
                assert not set(validation.tolist()) & set(largest.tolist())  # nested: every N <= 32 too
                assert len(set(validation.tolist())) == 2 * spec.holdout_per_class
                labels = splits.train_labels[validation]
                assert (labels[: spec.holdout_per_class] == pair[0]).all() and (labels[spec.holdout_per_class :] == pair[1]).all()
    task = build_task(spec, splits, [3, 8], 8, 200)
    split = build_validation(spec, splits, task, per_class=10)
    assert split.indices.tolist() == validation_indices(
        splits.train_labels, [3, 8], 200, spec.holdout_per_class, 10, test_labels=splits.test_labels
    ).tolist()  # fmt: skip
    assert not set(split.indices.tolist()) & set(task.train_indices.tolist())
    assert split.indices.max() < len(splits.train_labels)  # training-split positions: never a test image
    assert split.y.tolist() == [0] * 10 + [1] * 10 and split.x.shape == (20, 1, 8, 8)
    with pytest.raises(Exception, match="1 to 16"):
        validation_indices(splits.train_labels, [3, 8], 200, spec.holdout_per_class, 17)


# ---------------------------------------------------------------------------------------------
# Running: reproducible, stored, the chosen value flows into the cell


def test_tuning_is_reproducible_and_picks_the_best_trial(tmp_path):
    suite = suite_of()
    first, second = tmp_path / "first", tmp_path / "second"
    run_suite(suite, first, registry=REGISTRY)
    run_suite(suite, second, registry=REGISTRY)
    with Store(first / "results.sqlite", read_only=True) as one, Store(second / "results.sqlite", read_only=True) as two:
        trials, again = one.tuning_trials(), two.tuning_trials()
        tuning, cells = one.tuning(), {c["cell_id"]: c for c in one.cells()}
        assert [{k: v for k, v in t.items() if k != "seconds"} for t in trials] == [
            {k: v for k, v in t.items() if k != "seconds"} for t in again
        ]
        assert {k: v["chosen"] for k, v in tuning.items()} == {k: v["chosen"] for k, v in two.tuning().items()}
    tuned_cells = [c for c in expand(suite) if c.tuned]
    assert set(tuning) == {c.cell_id for c in tuned_cells}  # sgd and sam; adam is fixed, gnc a baseline
    assert len(trials) == 3 * len(tuned_cells)
    for cell_id, record in tuning.items():
        own = [t for t in trials if t["cell_id"] == cell_id]
        as_trials = [Trial(t["trial"], t["hyperparameters"], t["networks"], t["fitted"], t["validation_accuracy"], 0.0) for t in own]
        best = choose(as_trials, record["protocol"]["min_fit"])
        assert [t["trial"] for t in own if t["chosen"]] == [best]
        assert record["chosen"] == own[best]["hyperparameters"]
        stored = json.loads(cells[cell_id]["hyperparameters"])
        assert all(stored[name] == value for name, value in record["chosen"].items())  # flows into the cell
        assert len(record["validation_indices"]) == 32  # digits: all 16 held-out images per class


def test_tune_cell_repeats_exactly(tmp_path):
    from benchsuite.execution.cells import cell_module
    from benchsuite.tasks import TaskCache

    suite = suite_of()
    cell = next(c for c in expand(suite) if c.entry.name == "sam")
    spec = REGISTRY.dataset("digits")
    task = TaskCache().get(spec, suite.data, cell.classes, cell.n_train, cell.training_set_seed)
    validation = build_validation(spec, load_splits(spec), task)

    def once():
        return tune_cell(cell, task, validation, cell_module(cell, task, REGISTRY, torch.device("cpu")),
                         REGISTRY.optimizer("sam"), REGISTRY.prior("kaiming-uniform"), torch.device("cpu"))  # fmt: skip

    first, second = once(), once()
    strip = [(t.values, t.fitted, t.validation_accuracy) for t in first.trials]
    assert strip == [(t.values, t.fitted, t.validation_accuracy) for t in second.trials]
    assert first.chosen == second.chosen and set(first.values) == {"lr", "rho"}


def test_a_tuned_run_merges_with_its_trials(tmp_path):
    suite = suite_of(optimizers=[{"name": "sgd", "epochs": 10}])
    run_suite(suite, tmp_path / "run", registry=REGISTRY)
    with Store(tmp_path / "merged.sqlite") as merged:
        merged.merge(tmp_path / "run" / "results.sqlite")
        assert len(merged.tuning()) == 2 and len(merged.tuning_trials()) == 6
        merged.verify()


def test_a_tuned_suite_in_worker_processes_stores_what_it_stores_here(tmp_path):
    """Tuning runs where its unit runs (execution.tuned): in worker processes it chooses the same
    values, and its record (choices, trials) reaches the driver's store intact."""
    suite = suite_of(optimizers=[{"name": "sam", "epochs": 10, "tune": ["lr", "rho"]}])
    run_suite(suite, tmp_path / "here", registry=REGISTRY)
    run_suite(suite, tmp_path / "workers", registry=REGISTRY, executor="processes", executor_options={"jobs": 2})

    def stored(folder):
        with Store.open_existing(folder) as store:
            trials = [{k: v for k, v in t.items() if k != "seconds"} for t in store.tuning_trials()]
            networks = sorted((n["cell_id"], n["model_index"], n["test_acc"]) for n in store.network_rows())
            return store.tuning(), trials, networks

    here, workers = stored(tmp_path / "here"), stored(tmp_path / "workers")
    assert len(here[0]) == 2 and len(here[1]) == 6
    assert here == workers


def test_tuned_cells_survive_pickling_whole():
    """Cells travel to worker processes pickled: every field arrives, the tuned search spaces too
    (an Entry once pickled without them, and workers trained with the placeholders)."""
    import pickle

    for cell in expand(suite_of()):
        again = pickle.loads(pickle.dumps(cell))
        assert again == cell and again.tuned == cell.tuned and dict(again.entry.tuned) == dict(cell.entry.tuned)


def test_tuning_counts_against_the_cell_time_budget(tmp_path):
    """max_seconds_per_cell bounds a tuned cell, its trials included: trials of 100,000 epochs
    are stopped at the budget and the cells recorded as timed out while tuning, with no networks
    and no tuning record; untuned cells run as usual."""
    suite = suite_of(
        max_seconds_per_cell=1,
        optimizers=[{"name": "sgd", "epochs": 100_000}, {"name": "adam", "epochs": 5, "tune": []}],
        baselines=[],
    )
    run_suite(suite, tmp_path, registry=REGISTRY)
    with Store(tmp_path / "results.sqlite", read_only=True) as store:
        cells = {(c["optimizer"], c["training_set_seed"]): c for c in store.cells()}
        assert store.tuning() == {} and store.tuning_trials() == []
    for seed in (200, 201):
        stopped = cells[("sgd", seed)]
        assert stopped["status"] == "timed_out" and stopped["models_found"] == 0
        assert "while tuning (max_seconds_per_cell 1)" in stopped["status_detail"]
        # both cells' budgets (a unit of two: 2 s) and not the trials' end (200,000 steps each,
        # a minute or more here); the margin is for a loaded machine, which once took 9 s
        assert stopped["seconds"] < 20
        assert cells[("adam", seed)]["status"] == "ok"
