"""Figures are written, and the numbers they plot equal a recomputation from the database."""

from __future__ import annotations

import math
import random
import sqlite3
from statistics import fmean, pstdev

import pytest

pytest.importorskip("matplotlib")

from cli_runner import cli

from benchsuite.plots import PlotData, figures, plot_results
from benchsuite.store import NetworkResult, Store

WIDTHS = ["1/6", "2/6", "1"]
N_GRID = [2, 4, 6]
SEEDS = [200, 201, 202]
METHODS = [("gnc", "baseline"), ("sgd", "optimizer")]


def fill_store(path, n_grid=N_GRID, widths=WIDTHS, depths=("4",), metrics=True, seed=0):
    """A results database as the runner writes it, with random but fixed accuracies."""
    rng = random.Random(seed)
    with Store(path) as store:
        run = store.start_run(
            "suite", {"name": "t", "leaderboard": {"baseline": "gnc"}}, {}, "test"
        )
        for width in widths:
            for depth in depths:
                arch = f"mlp[width={width},depth={depth}]"
                for method, role in METHODS:
                    for s in SEEDS:
                        for n in n_grid:
                            found = rng.randint(3, 6)
                            cell = {
                                "cell_id": f"{arch}-{method}-{s}-{n}", "run_id": run, "suite_id": "suite",
                                "dataset": "fashion-mnist", "classes": "7,0", "class_names": "Sneaker vs T-shirt/top",
                                "n_train": n, "training_set_seed": s, "architecture": arch,
                                "architecture_name": "mlp", "width": width, "depth": depth,
                                "optimizer": method, "optimizer_name": method, "role": role,
                                "prior": "uniform", "hyperparameters": "{}", "models_requested": found,
                                "candidates_tried": found * 2 ** rng.randint(1, n) if role == "baseline" else found,
                                "epochs": None if role == "baseline" else 60, "seconds": 1.0, "exhausted": 0,
                                "seed": 1, "device": "cpu",
                            }  # fmt: skip
                            networks = [
                                NetworkResult(
                                    k,
                                    1.0,
                                    rng.uniform(0.5, 1.0),
                                    {
                                        "train_loss_lipschitz": rng.uniform(0, 0.7),
                                        "train_loss_frobenius": rng.uniform(0, 0.7),
                                    }
                                    if metrics
                                    else {},
                                )
                                for k in range(found)
                            ]
                            store.add_cell(cell, networks)
        store.finish_run(run)


@pytest.fixture
def out(tmp_path):
    fill_store(tmp_path / "results.sqlite")
    return tmp_path


def expected_accuracy(db, method, arch, n):
    """protocol.md: mean per training set, then mean and std (ddof 0) over training sets, in %."""
    rows = db.execute(
        "SELECT c.training_set_seed, n.test_acc FROM networks n JOIN cells c USING (cell_id) "
        "WHERE c.optimizer = ? AND c.architecture = ? AND c.n_train = ?",
        (method, arch, n),
    ).fetchall()
    per_set = {}
    for seed, acc in rows:
        per_set.setdefault(seed, []).append(acc)
    means = [fmean(v) for v in per_set.values()]
    return 100 * fmean(means), 100 * pstdev(means)


def expected_neg_log2(db, method, arch, n):
    rows = db.execute(
        "SELECT models_found, candidates_tried FROM cells WHERE optimizer = ? AND architecture = ? AND n_train = ?",
        (method, arch, n),
    ).fetchall()
    return fmean(-math.log2(found / tried) for found, tried in rows)


def test_plot_results_writes_png_and_svg(out):
    paths = plot_results(out)
    names = {p.name for p in paths}
    stem = "fashion-mnist_7v0_mlp"
    for kind in ("accuracy", "fit_probability"):
        assert f"{kind}_{stem}.png" in names and f"{kind}_{stem}.svg" in names
    assert f"scatter_{stem}_N6.png" in names
    for p in paths:
        assert p.parent == out / "figures" and p.stat().st_size > 1000


def test_plotting_again_changes_no_file(out):
    """No creation date and no random SVG ids: a rerun on the same data writes the same bytes."""
    first = {p: p.read_bytes() for p in plot_results(out)}
    again = {p: p.read_bytes() for p in plot_results(out)}
    assert first == again


def test_accuracy_errorbars_equal_recomputation(out):
    with Store(out / "results.sqlite") as store:
        made = figures(PlotData.from_store(store))
    figure = made["accuracy_fashion-mnist_7v0_mlp"]
    db = sqlite3.connect(out / "results.sqlite")
    panels = figure.axes
    assert [a.get_title() for a in panels] == ["gnc", "sgd"]  # G&C and SGD side by side
    checked = 0
    for axes in panels:
        method = axes.get_title()
        containers = axes.containers
        assert [c.get_label() for c in containers] == [f"w={w}" for w in WIDTHS]
        for container, width in zip(containers, WIDTHS):
            line, _caps, (bars,) = container.lines
            xs, ys = line.get_xdata(), line.get_ydata()
            assert list(xs) == N_GRID
            for x, y, segment in zip(xs, ys, bars.get_segments()):
                mean, std = expected_accuracy(db, method, f"mlp[width={width},depth=4]", int(x))
                assert y == pytest.approx(mean)
                (x0, low), (x1, high) = segment
                assert x0 == x1 == x
                assert low == pytest.approx(mean - std) and high == pytest.approx(mean + std)
                checked += 1
    assert checked == len(WIDTHS) * len(N_GRID) * 2


def test_fit_probability_equals_recomputation_and_has_y_equals_n(out):
    with Store(out / "results.sqlite") as store:
        figure = figures(PlotData.from_store(store))["fit_probability_fashion-mnist_7v0_mlp"]
    db = sqlite3.connect(out / "results.sqlite")
    (axes,) = figure.axes  # one baseline, no SGD panel
    assert axes.get_title() == "gnc"
    lines = {line.get_label(): line for line in axes.get_lines()}
    reference = lines.pop("y = N")
    assert list(reference.get_xdata()) == list(reference.get_ydata()) == N_GRID
    for width in WIDTHS:
        line = lines[f"w={width}"]
        for x, y in zip(line.get_xdata(), line.get_ydata()):
            assert y == pytest.approx(
                expected_neg_log2(db, "gnc", f"mlp[width={width},depth=4]", int(x))
            )


def test_scatter_points_are_the_stored_metrics(out):
    with Store(out / "results.sqlite") as store:
        figure = figures(PlotData.from_store(store))["scatter_fashion-mnist_7v0_mlp_N6"]
    db = sqlite3.connect(out / "results.sqlite")
    assert len(figure.axes) == 2
    for axes, metric in zip(figure.axes, ("train_loss_lipschitz", "train_loss_frobenius")):
        plotted = sorted(tuple(p) for c in axes.collections for p in c.get_offsets().tolist())
        stored = sorted(
            (value, 100 * acc)
            for value, acc in db.execute(
                "SELECT m.value, n.test_acc FROM network_metrics m JOIN networks n USING (cell_id, model_index) "
                "JOIN cells c USING (cell_id) WHERE m.metric = ? AND c.n_train = 6",
                (metric,),
            )
        )
        assert len(plotted) == len(stored) > 0
        assert [v for p in plotted for v in p] == pytest.approx([v for p in stored for v in p])


def test_single_n_study_plots_against_the_variant(tmp_path):
    fill_store(
        tmp_path / "results.sqlite",
        n_grid=[16],
        widths=["2/6"],
        depths=("1", "2", "4"),
        metrics=False,
    )
    with Store(tmp_path / "results.sqlite") as store:
        made = figures(PlotData.from_store(store))
    assert set(made) == {"accuracy_fashion-mnist_7v0_mlp"}  # no -log2 P line for one N, no scatter
    (axes,) = made["accuracy_fashion-mnist_7v0_mlp"].axes
    assert [t.get_text() for t in axes.get_xticklabels()] == ["depth 1", "depth 2", "depth 4"]
    db = sqlite3.connect(tmp_path / "results.sqlite")
    for container in axes.containers:
        line = container.lines[0]
        for x, y in zip(line.get_xdata(), line.get_ydata()):
            depth = ["1", "2", "4"][int(x)]
            assert y == pytest.approx(
                expected_accuracy(db, container.get_label(), f"mlp[width=2/6,depth={depth}]", 16)[0]
            )


def test_plot_command(out):
    result = cli("plot", str(out))
    assert result.returncode == 0, result.stderr
    assert (out / "figures" / "accuracy_fashion-mnist_7v0_mlp.svg").is_file()


def test_plot_command_without_results(tmp_path):
    result = cli("plot", str(tmp_path))
    assert result.returncode == 2
    assert "no results database" in result.stderr


def test_missing_matplotlib_names_the_extra(monkeypatch, out):
    import builtins

    from benchsuite.errors import BenchsuiteError

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(BenchsuiteError, match=r"benchsuite\[plots\]"):
        plot_results(out)


def test_sweep_effects_table_matches_recomputation(out):
    """The findings table in a published README: first -> last variant, per method and N."""
    from benchsuite.studies import sweep_effects

    table = sweep_effects(out)
    db = sqlite3.connect(out / "results.sqlite")
    assert "w=1/6 -> w=1" in table
    row = next(line for line in table.splitlines() if line.startswith("| 4 |"))
    for method, cell in zip(("gnc", "sgd"), row.strip("|").split("|")[1:]):
        first, _ = expected_accuracy(db, method, "mlp[width=1/6,depth=4]", 4)
        last, _ = expected_accuracy(db, method, "mlp[width=1,depth=4]", 4)
        assert f"({last - first:+.1f})" in cell
        assert cell.strip().startswith(f"{first:.1f} ±")
