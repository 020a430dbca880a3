"""The leaderboard: a pure function of the stored rows (protocol.md's aggregation).

Per training set: the mean test accuracy over its interpolating networks. Per (task, architecture,
optimizer): mean and std (ddof 0) of those per-training-set means, the networks counted, and the
gain over the reference baseline in percentage points, paired over the training sets both have.
For baselines: -log2 P(train err = 0) per training set (accepted / candidates tried), averaged.
"""

from __future__ import annotations

import math
from collections import defaultdict
from statistics import fmean, pstdev
from typing import Any, Iterable

GROUP_KEYS = ("dataset", "classes", "n_train", "architecture", "optimizer")


def _per_training_set(cells: Iterable[dict], networks: Iterable[dict]) -> dict[tuple, dict[int, dict]]:
    """group key -> training-set seed -> {test accuracies, train accuracies, cell}."""
    accuracies: dict[str, list[dict]] = defaultdict(list)
    for row in networks:
        accuracies[row["cell_id"]].append(row)
    grouped: dict[tuple, dict[int, dict]] = defaultdict(dict)
    for cell in cells:
        key = tuple(cell[k] for k in GROUP_KEYS)
        rows = accuracies.get(cell["cell_id"], [])
        grouped[key][cell["training_set_seed"]] = {
            "cell": cell,
            "test": [r["test_acc"] for r in rows],
            "train": [r["train_acc"] for r in rows],
        }
    return grouped


def neg_log2_p_fit(found: int, tried: int) -> float | None:
    """-log2(found / tried); None when nothing was found (only a lower bound log2(tried) is known)."""
    if found <= 0 or tried <= 0:
        return None
    return -math.log2(found / tried)


def build_rows(cells: list[dict], networks: list[dict], reference_baseline: str | None) -> list[dict[str, Any]]:
    """One leaderboard row per (dataset, classes, n_train, architecture, optimizer)."""
    grouped = _per_training_set(cells, networks)
    means = {
        key: {seed: fmean(ts["test"]) for seed, ts in sets.items() if ts["test"]}
        for key, sets in grouped.items()
    }
    rows = []
    for key, sets in grouped.items():
        dataset, classes, n_train, architecture, optimizer = key
        first = next(iter(sets.values()))["cell"]
        set_means = list(means[key].values())
        tried = sum(ts["cell"]["candidates_tried"] for ts in sets.values())
        row = {
            "dataset": dataset,
            "classes": [int(c) for c in classes.split(",")],
            "class_names": first["class_names"],
            "n_train": n_train,
            "architecture": architecture,
            "optimizer": optimizer,
            "role": first["role"],
            "prior": first["prior"],
            "training_sets": len(set_means),
            "models": sum(len(ts["test"]) for ts in sets.values()),
            "models_requested": sum(ts["cell"]["models_requested"] for ts in sets.values()),
            "exhausted": any(ts["cell"]["exhausted"] for ts in sets.values()),
            "test_acc_mean": fmean(set_means) if set_means else None,
            "test_acc_std": pstdev(set_means) if set_means else None,
            "train_acc_mean": _mean_of_all(ts["train"] for ts in sets.values()),
            "gain_pp": None,
            "baseline": None,
            "neg_log2_p_fit": None,
            "candidates": None,
            "epochs": first["epochs"],
            "seconds": sum(ts["cell"]["seconds"] for ts in sets.values()),
        }
        if first["role"] == "baseline":
            per_set = [
                neg_log2_p_fit(ts["cell"]["models_found"], ts["cell"]["candidates_tried"])
                for ts in sets.values()
            ]
            known = [v for v in per_set if v is not None]
            row["neg_log2_p_fit"] = fmean(known) if known and len(known) == len(per_set) else None
            row["candidates"] = tried
        elif reference_baseline is not None:
            reference = means.get((dataset, classes, n_train, architecture, reference_baseline), {})
            paired = [seed for seed in means[key] if seed in reference]
            if paired:
                row["gain_pp"] = 100 * fmean(means[key][s] - reference[s] for s in paired)
                row["baseline"] = reference_baseline
        rows.append(row)
    rows.sort(key=lambda r: (r["dataset"], r["classes"], r["architecture"], r["n_train"], r["role"] != "baseline", r["optimizer"]))
    return rows


def _mean_of_all(groups: Iterable[list[float]]) -> float | None:
    values = [v for group in groups for v in group]
    return fmean(values) if values else None


def leaderboard_from_store(store, reference_baseline: str | None = None) -> list[dict[str, Any]]:
    """Rows from a Store; the reference baseline defaults to the one named by the stored suite."""
    if reference_baseline is None:
        runs = store.runs()
        if runs:
            reference_baseline = runs[-1]["suite"].get("leaderboard", {}).get("baseline")
    return build_rows(store.cells(), store.network_rows(), reference_baseline)
