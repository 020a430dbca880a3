"""Per-network metrics in the leaderboard and the figures: each row's mean over training sets with
a bootstrap interval, in every format, recomputed here from the database; a run without metrics
renders as before (no column, no section, no figure)."""

from __future__ import annotations

import csv
import io
import json
import math
import sqlite3
from statistics import fmean

import numpy as np
import pytest
from rich.console import Console
from stored_results import make_results

from benchsuite import statistics as stats
from benchsuite.leaderboard import leaderboard_from_store
from benchsuite.reporting.csv_table import CSV_COLUMNS
from benchsuite.reporting.reporters import REPORTERS
from benchsuite.reporting.terminal import to_terminal
from benchsuite.store import Store


def panel(optimizer, n_train, test_acc, k):
    """Sharpness lower for the optimizers, rising with accuracy; init_distance undefined for G&C."""
    return {
        "sharpness": (40.0 if optimizer == "gnc" else 5.0) + 10 * test_acc + 0.1 * k,
        "init_distance": math.nan if optimizer == "gnc" else 1.0 + 0.01 * n_train + 0.001 * k,
    }


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("metrics")
    plain = make_results(root / "plain", pairs=((0, 1),), seeds=(200, 201, 202), models=6)
    measured = make_results(root / "measured", pairs=((0, 1),), seeds=(200, 201, 202), models=6, metrics=panel)
    return plain, measured


def rows_of(folder):
    with Store(folder / "results.sqlite", read_only=True) as store:
        return leaderboard_from_store(store)


def rendered(rows) -> dict[str, str]:
    texts = {name: reporter.render(rows, title="t") for name, reporter in REPORTERS.items()}
    console = Console(record=True, width=250, file=io.StringIO())
    to_terminal(rows, console)
    texts["terminal"] = console.export_text()
    return texts


def test_without_metrics_the_rows_and_every_format_are_as_before(folders):
    plain, measured = folders
    rows, with_metrics = rows_of(plain), rows_of(measured)
    assert all("metrics" not in row for row in rows)
    texts = rendered(rows)
    assert next(csv.reader(io.StringIO(texts["csv"]))) == list(CSV_COLUMNS)
    for name in ("md", "latex", "html", "terminal"):
        assert "iagnostics" not in texts[name] and "sharpness" not in texts[name]
    # the same accuracies with metrics: every other number of every row is unchanged
    for a, b in zip(rows, with_metrics):
        assert a == {k: v for k, v in b.items() if k != "metrics"}


def expected_summary(db, optimizer, n_train, width, metric):
    """protocol.md's aggregation, by hand: per training set the mean of the finite values."""
    rows = db.execute(
        "SELECT c.training_set_seed, m.value FROM network_metrics m JOIN cells c USING (cell_id) "
        "WHERE c.optimizer = ? AND c.n_train = ? AND c.width = ? AND m.metric = ?",
        (optimizer, n_train, width, metric),
    ).fetchall()
    per_set: dict[int, list[float]] = {}
    for seed, value in rows:
        if value is not None and math.isfinite(value):
            per_set.setdefault(seed, []).append(value)
    return (fmean(fmean(v) for v in per_set.values()) if per_set else None), per_set


def test_each_row_shows_each_metrics_mean_and_interval(folders):
    _, measured = folders
    rows = rows_of(measured)
    db = sqlite3.connect(measured / "results.sqlite")
    for row in rows:
        width = row["architecture"].split("w=")[1].split()[0]
        for metric in ("sharpness", "init_distance"):
            summary = row["metrics"][metric]
            mean, per_set = expected_summary(db, row["optimizer"], row["n_train"], width, metric)
            if mean is None:  # G&C has no initialization: no value, no interval, no networks
                assert row["optimizer"] == "gnc" and metric == "init_distance"
                assert summary == {"mean": None, "ci_low": None, "ci_high": None, "networks": 0}
                continue
            assert summary["mean"] == pytest.approx(mean, rel=1e-12)
            assert summary["networks"] == sum(len(v) for v in per_set.values())
            assert summary["ci_low"] <= summary["mean"] <= summary["ci_high"]
            # the interval is the accuracy's hierarchical bootstrap, on its own stream
            key = (row["dataset"], ",".join(map(str, row["classes"])), row["n_train"], row["architecture"], row["optimizer"])
            sets = {s: np.asarray(v) for s, v in per_set.items()}
            low, high = stats.mean_interval(sets, row_settings(rows), ("metric", metric, *key))
            assert (summary["ci_low"], summary["ci_high"]) == (low, high)
    gnc = [r["metrics"]["sharpness"]["mean"] for r in rows if r["optimizer"] == "gnc"]
    sgd = [r["metrics"]["sharpness"]["mean"] for r in rows if r["optimizer"] == "sgd"]
    assert min(gnc) > max(sgd)  # the planted difference survives the aggregation


def row_settings(rows):
    return rows.settings


def test_every_format_shows_the_metrics(folders):
    _, measured = folders
    rows = rows_of(measured)
    texts = rendered(rows)
    first = next(r for r in rows if r["optimizer"] == "sgd")
    mean = f"{first['metrics']['sharpness']['mean']:.3g}"
    assert "## Diagnostics" in texts["md"] and mean in texts["md"]
    assert 'id="diagnostics"' in texts["html"] and mean in texts["html"]
    assert "diagnostics (mean" in texts["latex"] and mean in texts["latex"]
    assert "Diagnostics" in texts["terminal"] and mean in texts["terminal"]
    parsed = list(csv.DictReader(io.StringIO(texts["csv"])))
    assert list(parsed[0])[-8:] == [f"{m}_{f}" for m in ("init_distance", "sharpness") for f in ("mean", "ci_low", "ci_high", "networks")]
    assert float(parsed[[r["optimizer"] for r in rows].index("sgd")]["sharpness_mean"]) == first["metrics"]["sharpness"]["mean"]
    records = json.loads(texts["json"])
    assert records[0]["metrics"] == rows[0]["metrics"]
    # the suite's order of metrics wins over the alphabet (stored suite: none listed, so by name)
    assert list(rows[0]["metrics"]) == ["init_distance", "sharpness"]


def test_the_suite_order_of_metrics_is_kept(tmp_path):
    suite = {"name": "t", "metrics": ["sharpness", "init_distance"], "leaderboard": {"baseline": "gnc"}}
    folder = make_results(tmp_path / "o", suite=suite, pairs=((0, 1),), n_trains=(4,), seeds=(200,), models=3, metrics=panel)
    assert list(rows_of(folder)[0]["metrics"]) == ["sharpness", "init_distance"]


def test_plot_draws_each_metric_against_test_accuracy_per_method(folders, tmp_path):
    pytest.importorskip("matplotlib")
    import shutil

    from benchsuite.plots import PlotData, figures, plot_results

    plain, measured = folders
    copy = tmp_path / "copy"
    shutil.copytree(measured, copy)
    names = {p.name for p in plot_results(copy)}
    stem = "digits_0v1_mlp"
    assert {f"metric_sharpness_{stem}.png", f"metric_init_distance_{stem}.svg"} <= names
    with Store(copy / "results.sqlite", read_only=True) as store:
        data = PlotData.from_store(store)
    figure = figures(data)[f"metric_sharpness_{stem}"]
    panels = [a for a in figure.axes if a.get_title()]
    assert [a.get_title() for a in panels] == ["gnc", "sgd", "adam"]  # baseline first, side by side
    plotted = set()
    for axes in panels:
        for line in axes.lines:
            xs, ys = line.get_xdata(), line.get_ydata()
            if len(xs) == 1 and line.get_marker() == "o":  # not the error bars' caps
                plotted.add((axes.get_title(), round(float(xs[0]), 9), round(float(ys[0]), 9)))
    expected = {
        (r["optimizer"], round(r["metrics"]["sharpness"]["mean"], 9), round(100 * r["test_acc_mean"], 9))
        for r in data.rows
    }
    assert plotted == expected
    # G&C has no init_distance: its panel is empty, the optimizers' are drawn
    init = figures(data)[f"metric_init_distance_{stem}"]
    assert [a.get_title() for a in init.axes if a.get_title()] == ["sgd", "adam"]
    # a run without metrics draws no metric figure
    plain_copy = tmp_path / "plain"
    shutil.copytree(plain, plain_copy)
    assert not any(p.name.startswith("metric_") for p in plot_results(plain_copy))
