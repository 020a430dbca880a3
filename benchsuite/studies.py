"""The studies of Peleg & Hein (protocol.md) as suite documents, one per study and dataset.

Why a generator: the paper's studies share one set of numbers (N grids, training-set seeds, SGD and
G&C settings, model counts) across 27 files. Writing them from the constants below keeps the files
consistent; the files under suites/peleg-hein/ are the output of `python -m benchsuite.studies
suites/peleg-hein`, checked in so that a researcher can read and run them without this module, and
tests/test_suites_shipped.py checks them against protocol.md's numbers independently.

Choices protocol.md leaves open, made here and stated in every file's header:
- SGD mini-batch orders are independent per network (`batch_order: independent`); the reference
  code shares one order across a chunk of networks, which correlates them.
- Depth studies run at width 2/6 (protocol.md gives the LeNet and MLP depth variants at 2/6; the
  ResNet4 depth study uses the same width for comparability).
- The single-N ablations (priors, SGD epochs, batch size) use LeNet at widths 1/6*, 1/6, 2/6, 4/6,
  the widths of protocol.md's published ablation numbers, and include G&C (uniform prior) as the
  reference the gains are measured against.
- SGD model counts equal G&C's (100 per training set and N in sweeps, 2000 at N = 16).
- Fashion-MNIST uses class-pair seed 202 like MNIST: (7, 0) = Sneaker (label 0) vs T-shirt/top
  (label 1), the same indices as MNIST's main pair "0 vs 7", and MNIST's U[-1, 1] SGD lr.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import yaml

TRAINING_SET_SEEDS = [200, 201, 202, 203]
SINGLE_N = 16
SWEEP_MODELS = 100  # per training set and N
SINGLE_N_MODELS = 2000
GNC_MAX_CANDIDATES = 10_000_000_000  # per cell; -log2 P ~ 20 at N = 32 needs ~1e8 for 100 models

DATASETS: dict[str, dict[str, Any]] = {
    "mnist": {
        "title": "MNIST 0 vs 7",
        "class_pair_seeds": [202],  # -> (7, 0)
        "n_train": list(range(2, 33, 2)),
        "uniform_init_lr": 0.001,
    },
    "cifar10": {
        "title": "CIFAR-10 bird vs ship",
        "class_pair_seeds": [201],  # -> (bird, ship)
        "n_train": list(range(2, 25, 2)),
        "uniform_init_lr": 0.0001,
    },
    "fashion-mnist": {
        "title": "Fashion-MNIST sneaker vs T-shirt/top (seed 202, the indices of MNIST's 0 vs 7)",
        "class_pair_seeds": [202],  # -> (7, 0) = (Sneaker, T-shirt/top)
        "n_train": list(range(2, 33, 2)),
        "uniform_init_lr": 0.001,
    },
}

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
DEPTH_WIDTH = "2/6"
ABLATION_ARCHITECTURE = {"name": "lenet", "widths": ["1/6*", "1/6", "2/6", "4/6"]}
PRIORS = ["uniform", "uniform-0.2", "kaiming-uniform", "kaiming-normal"]
EPOCHS = [1, 3, 5, 60]
FULL_BATCH_EPOCHS = [60, 480]

# protocol.md "Scatter studies": normalized training loss against test accuracy, per network
SCATTER_METRICS = ("train_loss_lipschitz", "train_loss_frobenius")

SGD = {
    "name": "sgd",
    "lr": 0.01,
    "prior": "kaiming-uniform",
    "batch_size": 2,
    "epochs": 60,
    "batch_order": "independent",
}
GNC = {"name": "gnc", "prior": "uniform", "max_candidates": GNC_MAX_CANDIDATES}

SHARED_NOTES = (
    "Settings (protocol.md): G&C from the U[-1, 1] prior, zero biases, accept iff training accuracy "
    "is 100%; SGD from Kaiming-uniform, lr 0.01, no momentum or weight decay, batch 2, 60 epochs, "
    "mini-batch order independent per network. Four training sets (seeds 200..203), drawn as the "
    "reference code draws them; a tie between the two logits predicts class 0 (the reference's argmax)."
)


def _task(dataset: str, n_train: list[int]) -> dict:
    spec = DATASETS[dataset]
    return {
        "dataset": dataset,
        "class_pair_seeds": list(spec["class_pair_seeds"]),
        "n_train": list(n_train),
        "training_set_seeds": list(TRAINING_SET_SEEDS),
        "training_draw": "reference",
    }


def _suite(name: str, description: str, dataset: str, n_train: list[int], models: int,
           architectures: list[dict], optimizers: list[dict], baselines: list[dict],
           reference: str = "gnc", metrics: tuple[str, ...] = ()) -> dict:  # fmt: skip
    document = {
        "name": name,
        "description": f"{description} {DATASETS[dataset]['title']}. {SHARED_NOTES}",
        "seed": 0,
        "device": "auto",
        "tie_rule": "argmax",
        "models_per_cell": models,
        "tasks": [_task(dataset, n_train)],
        "architectures": architectures,
        "optimizers": optimizers,
        "baselines": baselines,
        "leaderboard": {"baseline": reference},
    }
    if metrics:
        document["metrics"] = list(metrics)
    return document


def width_study(dataset: str, architecture: str) -> dict:
    depth = {"depths": [DEPTHS[architecture][-1]]}
    return _suite(
        f"peleg-hein-{dataset}-width-{architecture}",
        f"Width sweep of {architecture} over the N grid: does more width help SGD but not G&C?",
        dataset, DATASETS[dataset]["n_train"], SWEEP_MODELS,
        [{"name": architecture, "widths": list(WIDTHS[architecture]), **depth}],
        [dict(SGD)], [dict(GNC)], metrics=SCATTER_METRICS,
    )  # fmt: skip


def depth_study(dataset: str, architecture: str) -> dict:
    return _suite(
        f"peleg-hein-{dataset}-depth-{architecture}",
        f"Depth sweep of {architecture} at width {DEPTH_WIDTH} over the N grid: does more depth "
        "hurt SGD and G&C alike?",
        dataset, DATASETS[dataset]["n_train"], SWEEP_MODELS,
        [{"name": architecture, "widths": [DEPTH_WIDTH], "depths": list(DEPTHS[architecture])}],
        [dict(SGD)], [dict(GNC)], metrics=SCATTER_METRICS,
    )  # fmt: skip


def prior_study(dataset: str) -> dict:
    """Four priors for G&C and as SGD's initialization; SGD from U[-1, 1] needs a smaller lr."""
    others = [p for p in PRIORS if p != "uniform"]
    sgd = {k: v for k, v in SGD.items() if k != "prior"}
    return _suite(
        f"peleg-hein-{dataset}-priors",
        f"Prior ablation at N = {SINGLE_N}: G&C from four priors, and SGD initialized from each "
        f"(from U[-1, 1] with lr {DATASETS[dataset]['uniform_init_lr']}).",
        dataset, [SINGLE_N], SINGLE_N_MODELS, [dict(ABLATION_ARCHITECTURE)],
        [
            {**sgd, "grid": {"prior": others}},
            {**sgd, "label": "sgd[prior=uniform]", "prior": "uniform", "lr": DATASETS[dataset]["uniform_init_lr"]},
        ],
        [{**{k: v for k, v in GNC.items() if k != "prior"}, "grid": {"prior": list(PRIORS)}}],
        reference="gnc[prior=uniform]",
    )  # fmt: skip


def epochs_study(dataset: str) -> dict:
    sgd = {k: v for k, v in SGD.items() if k != "epochs"}
    return _suite(
        f"peleg-hein-{dataset}-sgd-epochs",
        f"SGD trained for 1, 3, 5 and 60 epochs (kept only if it interpolates), N = {SINGLE_N}.",
        dataset, [SINGLE_N], SINGLE_N_MODELS, [dict(ABLATION_ARCHITECTURE)],
        [{**sgd, "grid": {"epochs": list(EPOCHS)}}], [dict(GNC)],
    )  # fmt: skip


def batch_size_study(dataset: str) -> dict:
    sgd = {k: v for k, v in SGD.items() if k not in ("batch_size", "epochs")}
    return _suite(
        f"peleg-hein-{dataset}-batch-size",
        f"SGD with batch 2 and 8 (60 epochs) and full-batch GD (60 and 480 epochs), N = {SINGLE_N}.",
        dataset, [SINGLE_N], SINGLE_N_MODELS, [dict(ABLATION_ARCHITECTURE)],
        [
            {**sgd, "epochs": 60, "grid": {"batch_size": [2, 8]}},
            {**sgd, "grid": {"batch_size": ["full"], "epochs": list(FULL_BATCH_EPOCHS)}},
        ],
        [dict(GNC)],
    )  # fmt: skip


def all_studies() -> dict[str, dict]:
    """Relative path (dataset/study.yaml) -> suite document."""
    studies = {}
    for dataset in DATASETS:
        for architecture in WIDTHS:
            studies[f"{dataset}/width-{architecture}.yaml"] = width_study(dataset, architecture)
            studies[f"{dataset}/depth-{architecture}.yaml"] = depth_study(dataset, architecture)
        studies[f"{dataset}/priors.yaml"] = prior_study(dataset)
        studies[f"{dataset}/sgd-epochs.yaml"] = epochs_study(dataset)
        studies[f"{dataset}/batch-size.yaml"] = batch_size_study(dataset)
    return studies


class _Dumper(yaml.SafeDumper):
    """Lists of scalars on one line ([2, 4, 6]), everything else in block style."""


def _represent_list(dumper: yaml.SafeDumper, data: list):
    flow = all(not isinstance(item, (list, dict)) for item in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


def render(document: dict) -> str:
    """YAML with a header saying where the file comes from, keys in the suite's reading order."""
    header = (
        f"# {document['name']}: generated by `python -m benchsuite.studies` from protocol.md's numbers.\n"
        "# Run: benchsuite run <this file> --out runs/<name>; then benchsuite plot runs/<name>\n"
    )
    return header + yaml.dump(
        document, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True
    )


def write_studies(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    written = []
    studies = {
        **all_studies(),
        **{f"{REDUCED_FOLDER}/{k}": v for k, v in reduced_studies().items()},
    }
    for relative, document in studies.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(document))
        written.append(path)
    return written


# ---------------------------------------------------------------------------------------------
# reduced studies: what a 2-core CPU can run in tens of minutes (the published Fashion-MNIST runs)

REDUCED_FOLDER = "reduced"


def reduced(document: dict, name: str, *, n_train: list[int] | None = None, seeds: list[int] | None = None,
            models: int | None = None, widths: list | None = None, depths: list | None = None,
            metrics: bool = True, max_candidates: int | None = None) -> dict:  # fmt: skip
    """A protocol study with a smaller N grid, fewer training sets, fewer models or variants.

    Every reduction is written into the description, so the suite file (and the resolved suite in
    a published folder) says exactly how it differs from protocol.md."""
    document = copy.deepcopy(document)
    changes = []
    task = document["tasks"][0]
    if n_train is not None and n_train != task["n_train"]:
        changes.append(
            f"N grid {n_train} (protocol {task['n_train'][0]}..{task['n_train'][-1]} step 2)"
        )
        task["n_train"] = list(n_train)
    if seeds is not None and seeds != task["training_set_seeds"]:
        changes.append(f"training sets {seeds} (protocol {task['training_set_seeds']})")
        task["training_set_seeds"] = list(seeds)
    if models is not None and models != document["models_per_cell"]:
        changes.append(
            f"{models} networks per training set and N (protocol {document['models_per_cell']})"
        )
        document["models_per_cell"] = models
    (arch,) = document["architectures"]
    if widths is not None and widths != arch["widths"]:
        changes.append(f"widths {widths} (protocol {arch['widths']})")
        arch["widths"] = list(widths)
    if depths is not None and depths != arch["depths"]:
        changes.append(f"depths {depths} (protocol {arch['depths']})")
        arch["depths"] = list(depths)
    if not metrics and document.get("metrics"):
        changes.append("no normalized-loss metrics (no scatter figure)")
        document.pop("metrics")
    if max_candidates is not None:
        for entry in document["baselines"]:
            entry["max_candidates"] = max_candidates
        changes.append(f"G&C budget {max_candidates:,} candidates per cell")
    document["name"] = name
    document["description"] += (
        " REDUCED for a 2-core CPU: " + ("; ".join(changes) or "nothing") + "."
    )
    return document


def reduced_studies() -> dict[str, dict]:
    """The Fashion-MNIST width and depth studies of the MLP and LeNet, reduced for a CPU."""
    n_mlp = [2, 4, 8, 12, 16]
    n_lenet = [2, 4, 8, 16]
    return {
        "fashion-mnist-width-mlp.yaml": reduced(
            width_study("fashion-mnist", "mlp"), "fashion-mnist-width-mlp", n_train=n_mlp),
        "fashion-mnist-depth-mlp.yaml": reduced(
            depth_study("fashion-mnist", "mlp"), "fashion-mnist-depth-mlp", n_train=n_mlp),
        "fashion-mnist-width-lenet.yaml": reduced(
            width_study("fashion-mnist", "lenet"), "fashion-mnist-width-lenet", n_train=n_lenet,
            models=50, widths=["1/6*", "1/6", "2/6", "4/6", 1], metrics=False),
        "fashion-mnist-depth-lenet.yaml": reduced(
            depth_study("fashion-mnist", "lenet"), "fashion-mnist-depth-lenet",
            n_train=list(range(2, 17, 2)), metrics=False),
    }  # fmt: skip


# ---------------------------------------------------------------------------------------------
# the two findings, measured on a result folder


def sweep_effects(out_dir: str | Path, ns: tuple[int, ...] | None = None) -> str:
    """A Markdown table of the paper's two findings on a width or depth study's results.

    For each method and N: test accuracy of the first and last architecture variant (narrowest
    and widest, or shallowest and deepest, ordered as in the figures) and the difference in
    percentage points, then the mean difference over all N both variants have.
    Finding 1 (width) holds when SGD's difference is clearly positive and G&C's near zero;
    finding 2 (depth) when both are negative.
    """
    from statistics import fmean

    from benchsuite.escaping import markdown_cell, markdown_text
    from benchsuite.plots import (
        PlotData,
        grouped_rows,
        method_labels,
        sorted_variants,
        sweep_of,
        variant_label,
    )
    from benchsuite.store import Store

    with Store.open_existing(out_dir) as store:
        data = PlotData.from_store(store)
    lines = []
    for group, rows in grouped_rows(data).items():
        variants = data.variants()
        ordered = sorted_variants(rows, data)
        if len(ordered) < 2:
            continue
        first, last = ordered[0], ordered[-1]
        sweep = sweep_of([variants[a] for a in ordered])
        methods = method_labels(rows, data)
        by_key = {(r["optimizer"], r["architecture"], r["n_train"]): r for r in rows}
        n_all = sorted({r["n_train"] for r in rows})
        lines += [
            (
                f"{markdown_text(group.title)}: {markdown_text(variant_label(variants[first], sweep))} -> "
                f"{markdown_text(variant_label(variants[last], sweep))} (test accuracy %, mean ± std over training "
                "sets; difference in points)"
            ),
            "",
            "| N | " + " | ".join(markdown_cell(m) for m in methods) + " |",
            "|---:|" + "---:|" * len(methods),
        ]
        deltas: dict[str, list[float]] = {m: [] for m in methods}
        for n in n_all:
            cells = []
            for m in methods:
                a, b = by_key.get((m, first, n)), by_key.get((m, last, n))
                if not a or not b or a["test_acc_mean"] is None or b["test_acc_mean"] is None:
                    cells.append("—")
                    continue
                delta = 100 * (b["test_acc_mean"] - a["test_acc_mean"])
                deltas[m].append(delta)
                cells.append(
                    f"{100 * a['test_acc_mean']:.1f} ± {100 * a['test_acc_std']:.1f} -> "
                    f"{100 * b['test_acc_mean']:.1f} ± {100 * b['test_acc_std']:.1f} ({delta:+.1f})"
                )
            if ns is None or n in ns:
                lines.append(f"| {n} | " + " | ".join(cells) + " |")
        lines.append(
            f"| mean over {len(n_all)} N | "
            + " | ".join(f"{fmean(deltas[m]):+.1f}" if deltas[m] else "—" for m in methods)
            + " |"
        )
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    for path in write_studies(sys.argv[1] if len(sys.argv) > 1 else "suites/peleg-hein"):
        print(path)
