"""Real results databases for leaderboard tests, written through benchsuite.store.Store.

The rows look like a quickstart run: digits tasks, two MLP widths, SGD and Adam against G&C, test
accuracies that are multiples of 1/test-set-size, G&C well below the optimizers, a spread between
training sets, and a realistic candidates count for the baseline.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from benchsuite.plugins import load_registry
from benchsuite.store import NetworkResult, Store
from benchsuite.suite import validate_suite

TEST_IMAGES = 363  # digits 0 vs 1 test images in the quickstart split
LEVELS = {"sgd": 0.93, "adam": 0.90, "gnc": 0.74}
SPREAD = {"sgd": 0.03, "adam": 0.04, "gnc": 0.09}

SUITE_FILE = {
    "name": "stats-fixture",
    "seed": 0,
    "device": "cpu",
    "tasks": [
        {
            "dataset": "digits",
            "classes": [[0, 1], [3, 8]],
            "n_train": [4, 8],
            "training_set_seeds": [200, 201, 202, 203],
        }
    ],
    "architectures": [{"name": "mlp", "widths": ["1/6", 1], "depths": [4]}],
    "optimizers": [{"name": "sgd"}, {"name": "adam", "lr": 0.001}],
    "baselines": [{"name": "gnc", "prior": "uniform"}],
    "leaderboard": {"baseline": "gnc"},
}
# what a run stores: the resolved suite, every default filled in
SUITE = validate_suite(SUITE_FILE, load_registry(include_entry_points=False), "fixture.yaml").resolved
ENVIRONMENT = {
    "python": "3.11.2",
    "platform": "Linux-test",
    "packages": {"benchsuite": "0.1.0", "torch": "2.4.0", "numpy": "2.0.0"},
    "device": "cpu",
    "device_name": "x86_64",
    "cuda": None,
    "git_commit": "0123456789abcdef0123456789abcdef01234567",
    "plugins": [
        {
            "name": "benchsuite.builtins",
            "distribution": "benchsuite",
            "version": "0.1.0",
            "status": "loaded",
        }
    ],
}


def make_results(
    folder: Path,
    *,
    suite: dict | None = None,
    suite_id: str = "suite0000fixture",
    seeds: tuple[int, ...] = (200, 201, 202, 203),
    pairs: tuple[tuple[int, int], ...] = ((0, 1), (3, 8)),
    n_trains: tuple[int, ...] = (4, 8),
    widths: tuple[str, ...] = ("1/6", "1"),
    optimizers: tuple[str, ...] = ("sgd", "adam", "gnc"),
    models: int = 12,
    rng_seed: int = 0,
    skip: set[tuple] = frozenset(),
    skip_optimizers: tuple[str, ...] = (),
    metrics=None,
) -> Path:
    """Write folder/results.sqlite with one cell per (pair, N, width, optimizer, training set).

    Skipped cells (by key, or all cells of `skip_optimizers`) still draw their random numbers, so
    two folders made with complementary skips split one and the same data set.
    `metrics(optimizer, n_train, test_acc, model_index) -> {name: value}` adds per-network
    metrics (drawing no random numbers, so the accuracies stay those of a folder without them).
    """
    rng = np.random.default_rng(rng_seed)
    folder.mkdir(parents=True, exist_ok=True)
    with Store(folder / "results.sqlite") as store:
        run_id = store.start_run(
            suite_id, suite or SUITE, ENVIRONMENT, "benchsuite run fixture.yaml"
        )
        for pair in pairs:
            for n_train in n_trains:
                for width in widths:
                    for seed in seeds:
                        set_effect = rng.normal(0, 0.02)
                        for optimizer in optimizers:
                            write = (
                                pair,
                                n_train,
                                width,
                                optimizer,
                                seed,
                            ) not in skip and optimizer not in skip_optimizers
                            _add_cell(
                                store,
                                run_id,
                                suite_id,
                                pair,
                                n_train,
                                width,
                                seed,
                                optimizer,
                                set_effect,
                                models,
                                rng,
                                write,
                                metrics,
                            )
        store.finish_run(run_id)
    return folder


def _add_cell(
    store,
    run_id,
    suite_id,
    pair,
    n_train,
    width,
    seed,
    optimizer,
    set_effect,
    models,
    rng,
    write=True,
    metrics=None,
) -> None:
    baseline = optimizer == "gnc"
    level = (
        LEVELS.get(optimizer, 0.78 + (zlib.crc32(optimizer.encode()) % 160) / 1000)  # any other label
        + set_effect
        + (0.01 if width == "1" and not baseline else 0)
        + 0.005 * n_train
    )
    accuracies = np.clip(rng.normal(level, SPREAD.get(optimizer, 0.04), size=models), 0.3, 1.0)
    accuracies = np.round(accuracies * TEST_IMAGES) / TEST_IMAGES
    found = (
        np.sort(rng.choice(10**6, size=models, replace=False)) if baseline else np.arange(models)
    )
    tried = (
        int(models * 2 ** rng.uniform(n_train - 2, n_train))
        if baseline
        else models + int(rng.integers(0, 3))
    )
    cell_id = f"{suite_id}-{pair[0]}{pair[1]}-{n_train}-{width}-{optimizer}-{seed}".replace(
        "/", "_"
    )
    cell = {
        "cell_id": cell_id,
        "run_id": run_id,
        "suite_id": suite_id,
        "dataset": "digits",
        "classes": f"{pair[0]},{pair[1]}",
        "class_names": f"{pair[0]} vs {pair[1]}",
        "n_train": n_train,
        "training_set_seed": seed,
        "architecture": f"mlp w={width} d=4",
        "architecture_name": "mlp",
        "width": width,
        "depth": "4",
        "optimizer": optimizer,
        "optimizer_name": optimizer,
        "role": "baseline" if baseline else "optimizer",
        "prior": "uniform" if baseline else "kaiming-uniform",
        "hyperparameters": "{}",
        "models_requested": models,
        "candidates_tried": tried,
        "epochs": None if baseline else 60,
        "seconds": float(rng.uniform(0.1, 2.0)),
        "exhausted": 0,
        "seed": zlib.crc32(cell_id.encode()),
        "device": "cpu",
    }
    if write:
        store.add_cell(
            cell,
            [
                NetworkResult(int(f), 1.0, float(a), metrics(optimizer, n_train, float(a), k) if metrics else {})
                for k, (f, a) in enumerate(zip(found, accuracies))
            ],
        )
