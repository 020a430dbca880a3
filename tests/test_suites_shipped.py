"""Every shipped suite validates, and the Peleg & Hein suites carry protocol.md's numbers.

The expected numbers are written out here from protocol.md, not imported from
benchsuite.studies, so that a wrong constant there cannot pass its own test.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from benchsuite.plugins import default_registry
from benchsuite.resolved import expand
from benchsuite.suite import load_suite

ROOT = Path(__file__).resolve().parents[1]
SUITES = sorted((ROOT / "suites").rglob("*.yaml"))
PELEG_HEIN = ROOT / "suites" / "peleg-hein"
STUDIES = sorted(
    p for d in ("mnist", "cifar10", "fashion-mnist") for p in (PELEG_HEIN / d).glob("*.yaml")
)
REDUCED = sorted((PELEG_HEIN / "reduced").glob("*.yaml"))

# protocol.md
SEEDS = [200, 201, 202, 203]
N_GRID = {
    "mnist": list(range(2, 33, 2)),
    "fashion-mnist": list(range(2, 33, 2)),
    "cifar10": list(range(2, 25, 2)),
}
PAIRS = {"mnist": [[7, 0]], "fashion-mnist": [[7, 0]], "cifar10": [[2, 8]]}  # 0 vs 7; bird vs ship
UNIFORM_INIT_LR = {"mnist": 0.001, "fashion-mnist": 0.001, "cifar10": 0.0001}
WIDTHS = {
    "lenet": ["1/6*", "1/6", "2/6", "3/6", "4/6", 1],
    "mlp": ["1/6", "2/6", "4/6", 1],
    "resnet4": ["1/6", "2/6", "4/6", 1],
}
DEPTHS = {
    "lenet": ["1c-1f", "2c-1f", "2c-2f", "2c-3f"],
    "mlp": [1, 2, 3, 4],
    "resnet4": ["layer3", "layer2-3", "full"],
}
PRIORS = {"uniform", "uniform-0.2", "kaiming-uniform", "kaiming-normal"}


def _id(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.fixture(scope="module")
def registry():
    return default_registry()


@pytest.mark.parametrize("path", SUITES, ids=_id)
def test_shipped_suite_validates(path, registry):
    suite = load_suite(path, registry)
    assert expand(suite), "a suite with no cells"


def test_every_study_and_dataset_is_shipped():
    names = {p.relative_to(PELEG_HEIN).as_posix() for p in STUDIES}
    for dataset in N_GRID:
        for arch in WIDTHS:
            assert f"{dataset}/width-{arch}.yaml" in names
            assert f"{dataset}/depth-{arch}.yaml" in names
        for study in ("priors", "sgd-epochs", "batch-size"):
            assert f"{dataset}/{study}.yaml" in names


def test_shipped_studies_are_the_generated_ones():
    """suites/peleg-hein/ is the output of benchsuite.studies: regenerate after changing it."""
    from benchsuite.studies import all_studies, reduced_studies, render

    generated = {**all_studies(), **{f"reduced/{k}": v for k, v in reduced_studies().items()}}
    assert {p.relative_to(PELEG_HEIN).as_posix() for p in STUDIES + REDUCED} == set(generated)
    for relative, document in generated.items():
        assert (PELEG_HEIN / relative).read_text() == render(document), relative


def _resolved(path, registry):
    return load_suite(path, registry).resolved


def _sgd_settings_are_protocol(entry, dataset):
    s, h = entry["settings"], entry["hyperparameters"]
    assert h["momentum"] == 0 and h["weight_decay"] == 0 and not h["nesterov"]
    if s["prior"] == "uniform":
        assert h["lr"] == UNIFORM_INIT_LR[dataset]
    else:
        assert h["lr"] == 0.01
    assert s["prior"] in PRIORS


@pytest.mark.parametrize("path", STUDIES, ids=_id)
def test_study_uses_protocol_numbers(path, registry):
    r = _resolved(path, registry)
    dataset = path.parent.name
    (task,) = r["tasks"]
    assert task["dataset"] == dataset
    assert task["classes"] == PAIRS[dataset]
    assert task["training_set_seeds"] == SEEDS
    study = path.stem
    single_n = study in ("priors", "sgd-epochs", "batch-size")
    assert task["n_train"] == ([16] if single_n else N_GRID[dataset])
    for entry in r["optimizers"] + r["baselines"]:
        assert entry["models"] == (2000 if single_n else 100)
    for entry in r["baselines"]:
        assert entry["name"] == "gnc"
        assert entry["settings"]["max_candidates"] >= 10**9
    assert r["leaderboard"]["baseline"] in {"gnc", "gnc[prior=uniform]"}
    for entry in r["optimizers"]:
        assert entry["name"] == "sgd"
        _sgd_settings_are_protocol(entry, dataset)

    if study.startswith(("width-", "depth-")):
        (arch,) = r["architectures"]
        name = study.split("-", 1)[1]
        assert arch["name"] == name
        (sgd,) = r["optimizers"]
        assert sgd["settings"] == {
            "prior": "kaiming-uniform", "batch_size": 2, "epochs": 60,
            "batch_order": "independent", "max_networks": sgd["settings"]["max_networks"],
        }  # fmt: skip
        assert [b["settings"]["prior"] for b in r["baselines"]] == ["uniform"]
        assert set(r["metrics"]) == {"train_loss_lipschitz", "train_loss_frobenius"}
        if study.startswith("width-"):
            assert arch["widths"] == WIDTHS[name]
            assert arch["depths"] == [DEPTHS[name][-1]]
        else:
            assert arch["widths"] == ["2/6"]
            assert arch["depths"] == DEPTHS[name]
    elif study == "priors":
        assert {b["settings"]["prior"] for b in r["baselines"]} == PRIORS
        assert {o["settings"]["prior"] for o in r["optimizers"]} == PRIORS
        assert all(
            o["settings"]["epochs"] == 60 and o["settings"]["batch_size"] == 2
            for o in r["optimizers"]
        )
    elif study == "sgd-epochs":
        assert sorted(o["settings"]["epochs"] for o in r["optimizers"]) == [1, 3, 5, 60]
        assert all(o["settings"]["batch_size"] == 2 for o in r["optimizers"])
    elif study == "batch-size":
        runs = sorted(
            (str(o["settings"]["batch_size"]), o["settings"]["epochs"]) for o in r["optimizers"]
        )
        assert runs == [("2", 60), ("8", 60), ("full", 60), ("full", 480)]


def test_ablations_use_the_published_lenet_widths(registry):
    for path in STUDIES:
        if path.stem in ("priors", "sgd-epochs", "batch-size"):
            (arch,) = _resolved(path, registry)["architectures"]
            assert arch["name"] == "lenet" and arch["widths"] == ["1/6*", "1/6", "2/6", "4/6"]


def test_fashion_mnist_twins_mirror_mnist(registry):
    """Same structure as the MNIST suite: only the dataset (and names) differ."""
    for mnist in sorted((PELEG_HEIN / "mnist").glob("*.yaml")):
        twin = PELEG_HEIN / "fashion-mnist" / mnist.name
        a, b = yaml.safe_load(mnist.read_text()), yaml.safe_load(twin.read_text())
        for key in (
            "models_per_cell",
            "architectures",
            "optimizers",
            "baselines",
            "leaderboard",
            "metrics",
        ):
            assert a.get(key) == b.get(key), (mnist.name, key)
        assert {**a["tasks"][0], "dataset": None} == {**b["tasks"][0], "dataset": None}


@pytest.mark.parametrize("path", REDUCED, ids=_id)
def test_reduced_studies_keep_protocol_settings_and_say_what_they_cut(path, registry):
    """Reduced suites may cut the N grid, training sets, model count and variants, never the
    methods' settings; every cut is written into the description."""
    r = _resolved(path, registry)
    (task,) = r["tasks"]
    assert task["classes"] == PAIRS["fashion-mnist"]
    assert set(task["n_train"]) <= set(N_GRID["fashion-mnist"])
    assert set(task["training_set_seeds"]) <= set(SEEDS)
    (sgd,) = r["optimizers"]
    _sgd_settings_are_protocol(sgd, "fashion-mnist")
    assert (sgd["settings"]["batch_size"], sgd["settings"]["epochs"], sgd["settings"]["prior"]) == (
        2,
        60,
        "kaiming-uniform",
    )
    assert [b["settings"]["prior"] for b in r["baselines"]] == ["uniform"]
    assert "REDUCED" in r["description"]
    if task["n_train"] != N_GRID["fashion-mnist"]:
        assert "N grid" in r["description"]
    if task["training_set_seeds"] != SEEDS:
        assert "training sets" in r["description"]
