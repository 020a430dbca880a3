"""subset-mcmc against exact G&C in one result folder (suites/validation/subset-vs-gnc.yaml):
per cell both -log2 P(fit) with 95% intervals and the two test-accuracy distributions (KS), then
the mean difference in test accuracy over cells with a bootstrap interval.

The interval of the mean difference resamples cells, not networks: a cell's subset-mcmc networks
are correlated (shared ancestors), so each cell's difference of means is the independent unit.

    PYTHONPATH=. python benchmarks/subset_validation.py runs/subset-vs-gnc [--sampler subset-mcmc]
"""

from __future__ import annotations

import argparse
import gzip
import math
import shutil
import sqlite3
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy.stats import ks_2samp, t

KEY = ("dataset", "classes", "architecture", "n_train", "training_set_seed")


def open_database(folder: Path) -> sqlite3.Connection:
    path = folder / "results.sqlite"
    if not path.exists() and (folder / "results.sqlite.gz").exists():
        copy = Path(tempfile.mkdtemp()) / "results.sqlite"
        with gzip.open(folder / "results.sqlite.gz") as source, open(copy, "wb") as target:
            shutil.copyfileobj(source, target)
        path = copy
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def load(db: sqlite3.Connection) -> dict:
    """(cell key) -> optimizer -> {cell, estimates, test accuracies}."""
    db.row_factory = sqlite3.Row
    cells = {r["cell_id"]: dict(r) for r in db.execute("SELECT * FROM cells")}
    estimates: dict[str, dict] = defaultdict(dict)
    for cell_id, name, value in db.execute("SELECT cell_id, name, value FROM cell_estimates"):
        estimates[cell_id][name] = value
    tests: dict[str, list] = defaultdict(list)
    for cell_id, acc in db.execute("SELECT cell_id, test_acc FROM networks ORDER BY cell_id, model_index"):
        tests[cell_id].append(acc)
    out: dict[tuple, dict] = defaultdict(dict)
    for cell_id, cell in cells.items():
        out[tuple(cell[k] for k in KEY)][cell["optimizer"]] = {
            "cell": cell, "estimates": estimates[cell_id], "test": np.asarray(tests[cell_id]),
        }  # fmt: skip
    return out


def gnc_bits(cell: dict) -> tuple[float, float]:
    """-log2 of found / tried, and its binomial standard error in bits."""
    found, tried = cell["models_found"], cell["candidates_tried"]
    p = found / tried
    return -math.log2(p), math.sqrt((1 - p) / found) / math.log(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--sampler", default="subset-mcmc")
    parser.add_argument("--resamples", type=int, default=20000)
    args = parser.parse_args()
    groups = load(open_database(args.folder))
    print("| task | N | set | G&C -log2 P [95%] | subset -log2 P [95%] | diff / combined se | R-hat P | ESS acc "
          "| G&C acc % | subset acc % | diff pp | KS p |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    differences, z_scores, ks, bits = [], [], [], []
    for key in sorted(groups):
        both = groups[key]
        if "gnc" not in both or args.sampler not in both:
            continue
        gnc, sub = both["gnc"], both[args.sampler]
        if gnc["cell"]["models_found"] == 0 or "neg_log2_p_fit" not in sub["estimates"]:
            continue
        exact, exact_se = gnc_bits(gnc["cell"])
        e = sub["estimates"]
        estimate, se = e["neg_log2_p_fit"], e.get("neg_log2_p_fit_se", float("nan"))
        quantile = t.ppf(0.975, max(1, int(e.get("repeats", 2)) - 1))  # se from the repeats: Student t
        z = (estimate - exact) / math.hypot(se, exact_se)
        d = 100 * (sub["test"].mean() - gnc["test"].mean())
        p = ks_2samp(sub["test"], gnc["test"]).pvalue
        differences.append(d)
        z_scores.append(z)
        bits.append(estimate - exact)
        ks.append(p)
        dataset, classes, architecture, n, seed = key
        print(
            f"| {dataset} {classes} {architecture} | {n} | {seed} "
            f"| {exact:.2f} [{exact - 1.96 * exact_se:.2f}, {exact + 1.96 * exact_se:.2f}] "
            f"| {estimate:.2f} [{estimate - quantile * se:.2f}, {estimate + quantile * se:.2f}] | {z:+.2f} "
            f"| {e.get('rhat_neg_log2_p', float('nan')):.2f} | {e.get('ess_test_acc', float('nan')):.0f} "
            f"| {100 * gnc['test'].mean():.1f} | {100 * sub['test'].mean():.1f} | {d:+.2f} | {p:.3f} |"
        )
    if not differences:
        print("no cells with both samplers")
        return
    d = np.asarray(differences)
    rng = np.random.default_rng(0)
    means = d[rng.integers(0, d.size, (args.resamples, d.size))].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    z = np.asarray(z_scores)
    print()
    print(f"cells: {d.size}; test accuracy, subset - G&C: mean {d.mean():+.2f} pp, 95% bootstrap interval over "
          f"cells [{low:+.2f}, {high:+.2f}]; |diff| per cell: median {np.median(np.abs(d)):.2f}, max {np.abs(d).max():.2f}")
    print(f"-log2 P, (subset - G&C) / combined se: mean {z.mean():+.2f}, rms {math.sqrt((z**2).mean()):.2f}, "
          f"|z| > 2 in {(np.abs(z) > 2).sum()} of {z.size}; subset - G&C in bits: mean {np.mean(bits):+.2f}")
    print(f"KS (networks treated as independent, so p is too small for correlated subset networks): "
          f"p < 0.05 in {sum(p < 0.05 for p in ks)} of {len(ks)} cells, p < 0.001 in {sum(p < 0.001 for p in ks)}")


if __name__ == "__main__":
    main()
