"""Benchmark fixtures: the issue-3 task (Fashion-MNIST T-shirt/top vs sneaker, N=16, seed 200),
the paper MLP (width 1), and the device (CUDA when available).

Run: .venv/bin/python -m pytest benchmarks --benchmark-only   (not part of the default test run)
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

CLASSES = (0, 7)  # T-shirt/top (label 0) vs sneaker (label 1)
N_TRAIN = 16
TRAINING_SET_SEED = 200


def bench_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture(scope="session")
def device() -> torch.device:
    return bench_device()


def _read_idx(path: Path) -> np.ndarray:
    if path.suffix == ".gz":
        with gzip.open(path) as f:
            data = f.read()
    else:
        data = path.read_bytes()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def _fallback_task(n_train: int, device):
    """Only if benchsuite.tasks cannot build it: the same protocol, from the IDX files directly."""
    root = Path(os.environ.get("BENCHSUITE_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))
    images = torch.from_numpy(_read_idx(root / "train-images-idx3-ubyte.gz").copy()).float() / 255
    labels = torch.from_numpy(_read_idx(root / "train-labels-idx1-ubyte.gz").copy()).long()
    mean, std = images.mean(), images.std(unbiased=False)
    chosen = []
    for label in CLASSES:
        of_class = (labels == label).nonzero().flatten()
        perm = torch.randperm(
            of_class.numel(), generator=torch.Generator().manual_seed(TRAINING_SET_SEED)
        )
        chosen.append(of_class[perm[128 : 128 + n_train // 2]])
    idx = torch.cat(chosen)
    x = ((images[idx] - mean) / std).unsqueeze(1)
    y = (labels[idx] == CLASSES[1]).long()
    return x.to(device), y.to(device)


def load_task(n_train: int = N_TRAIN, device="cpu"):
    """(x_train, y_train) of the benchmark task on `device`.

    $BENCHSUITE_BENCH_TASK_FILE may name a torch.save'd {"x_train", "y_train"} of this task (N=16),
    for machines that cannot carry the dataset."""
    saved = os.environ.get("BENCHSUITE_BENCH_TASK_FILE")
    if saved and n_train == N_TRAIN and Path(saved).exists():
        task = torch.load(saved)
        return task["x_train"].to(device), task["y_train"].to(device)
    try:
        from benchsuite.plugins import default_registry
        from benchsuite.records import DataOptions
        from benchsuite.tasks import build_task, load_splits

        spec = default_registry().dataset("fashion-mnist")
        splits = load_splits(spec, DataOptions())
        task = build_task(spec, splits, CLASSES, n_train, TRAINING_SET_SEED, device)
        return task.x_train, task.y_train
    except Exception as error:  # noqa: BLE001 - any failure: fall back to the IDX files
        print(f"benchsuite.tasks unavailable ({error!r}); reading the IDX files directly")
        return _fallback_task(n_train, device)


def paper_mlp(width=1) -> nn.Sequential:
    try:
        from benchsuite.architectures.mlp import build_mlp

        return build_mlp((1, 28, 28), width=width, bias=False)
    except ImportError:
        w = float(width)
        sizes = [int(120 * w), int(60 * w), int(30 * w), int(12 * w)]
        layers = [nn.MaxPool2d(2), nn.Flatten()]
        features = 196
        for s in sizes:
            layers += [nn.Linear(features, s, bias=False), nn.ReLU()]
            features = s
        layers.append(nn.Linear(features, 2, bias=False))
        return nn.Sequential(*layers)


@pytest.fixture(scope="session")
def task(device):
    return load_task(N_TRAIN, device)


@pytest.fixture(scope="session")
def mlp(device):
    return paper_mlp().to(device)


RESULTS: dict[str, float] = {}  # rates measured in this run, for ratios
