"""A tiny digits suite and the same suite grown by another N, for the tests of resuming a grown
suite (test_grown_resume.py) and publishing its folder (test_publish_grown.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import yaml

FIRST = {
    "name": "grown",
    "seed": 5,
    "device": "cpu",
    "models_per_cell": 2,
    "tasks": [{"dataset": "digits", "classes": [[0, 1]], "n_train": [4], "training_set_seeds": [200, 201]}],
    "architectures": [{"name": "mlp", "widths": ["1/6"], "depths": [2]}],
    "optimizers": [{"name": "sgd", "epochs": 20}],
    "baselines": [{"name": "gnc"}],
}
GROWN = {**FIRST, "tasks": [{**FIRST["tasks"][0], "n_train": [4, 6]}]}  # another N: 4 more cells


def suite_file(folder: Path, name: str, document: dict) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def rows(database: Path, query: str) -> list[tuple]:
    with sqlite3.connect(database) as db:
        return db.execute(query).fetchall()
