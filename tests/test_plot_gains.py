"""Figures that stay readable with many optimizers (benchsuite.plot_gains): gain against N with a
line and band per optimizer, a ranked dot plot, a summary across tasks. Each drawn number is the
leaderboard row's; with few optimizers nothing changes (published figure sets stay)."""

from __future__ import annotations

import io
from itertools import pairwise
from statistics import fmean

import pytest
from stored_results import make_results

from benchsuite.plot_gains import by_mean_gain, summary_intervals
from benchsuite.plots import PlotData, figures
from benchsuite.store import Store

pytest.importorskip("matplotlib")
MANY = tuple(f"opt{i:02d}" for i in range(10)) + ("gnc",)


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    folder = make_results(tmp_path_factory.mktemp("many") / "out", pairs=((0, 1),), optimizers=MANY, models=4)
    with Store(folder / "results.sqlite", read_only=True) as store:
        data = PlotData.from_store(store)
    return data, figures(data)


def lines(axes, prefix: str) -> dict[str, object]:
    return {line.get_gid()[len(prefix) :]: line for line in axes.get_lines() if (line.get_gid() or "").startswith(prefix)}


def test_many_optimizers_get_gain_ranking_and_summary_instead_of_a_panel_each(many):
    _, made = many
    assert next(iter(made)) == "summary"
    assert {"gain_digits_0v1_mlp", "ranking_digits_0v1_mlp"} <= set(made)
    assert not any(stem.startswith("accuracy_") for stem in made)  # 10 panels would not compare
    for figure in made.values():
        width, height = figure.get_size_inches()
        assert width <= 14 and height <= 16
        figure.savefig(io.BytesIO(), format="png", dpi=50)


def test_gain_lines_are_the_rows_gains_and_the_legend_ranks_them(many):
    data, made = many
    figure = made["gain_digits_0v1_mlp"]
    rows = [r for r in data.rows if r["role"] == "optimizer"]
    panels = [a for a in figure.axes if a.get_title()]
    assert [a.get_title() for a in panels] == ["w=1/6", "w=1"]
    for axes, width in zip(panels, ("mlp w=1/6 d=4", "mlp w=1 d=4")):
        drawn = lines(axes, "gain ")
        assert set(drawn) == {m for m in MANY if m != "gnc"}
        for method, line in drawn.items():
            expected = sorted((r["n_train"], r["gain_pp"]) for r in rows if r["optimizer"] == method and r["architecture"] == width)
            assert list(zip(line.get_xdata(), line.get_ydata())) == expected
    legend = [text.get_text() for text in figure.legends[0].get_texts()]
    assert legend == by_mean_gain(rows)
    gains = {m: fmean(r["gain_pp"] for r in rows if r["optimizer"] == m) for m in legend}
    assert all(gains[a] >= gains[b] for a, b in pairwise(legend))


def test_ranked_dots_are_the_gains_best_at_the_top(many):
    data, made = many
    figure = made["ranking_digits_0v1_mlp"]
    order = by_mean_gain(data.rows)
    rows = {(r["optimizer"], r["architecture"], r["n_train"]): r for r in data.rows}
    checked = 0
    for axes in figure.axes:
        title = axes.get_title()  # "w=1/6, N = 4"
        width, n = title.split(", N = ")
        architecture = f"mlp {width} d=4"
        for method, dot in lines(axes, "dot ").items():
            assert dot.get_xdata()[0] == rows[(method, architecture, int(n))]["gain_pp"]
            assert dot.get_ydata()[0] == len(order) - 1 - order.index(method)
            checked += 1
    assert checked == 10 * 2 * 2  # optimizers x widths x N


def test_the_summary_is_the_mean_gain_over_tasks_with_a_fixed_bootstrap(many):
    data, made = many
    table = summary_intervals(data.rows)
    assert table == summary_intervals(data.rows)  # the same interval every time
    axes = made["summary"].axes[0]
    dots = lines(axes, "summary ")
    for method, mean, low, high, tasks in table:
        own = [r["gain_pp"] for r in data.rows if r["optimizer"] == method]
        assert mean == pytest.approx(fmean(own)) and tasks == len(own) == 4
        assert low <= mean <= high
        assert dots[method].get_xdata()[0] == mean
    assert [m for m, *_ in table] == by_mean_gain(data.rows)
    labels = [t.get_text() for t in axes.get_yticklabels()]
    for method, *_rest, tasks in table:  # each label says how often the method's networks fit
        own = [r for r in data.rows if r["optimizer"] == method]
        share = sum(r["models"] for r in own) / sum(r["candidates"] for r in own)
        assert f"{method} ({tasks} tasks, fit {100 * share:.0f}%)" in labels


def test_few_optimizers_keep_the_figures_they_had(tmp_path):
    folder = make_results(tmp_path / "out", pairs=((0, 1),), models=4)
    with Store(folder / "results.sqlite", read_only=True) as store:
        made = figures(PlotData.from_store(store))
    assert set(made) == {"accuracy_digits_0v1_mlp", "fit_probability_digits_0v1_mlp"}


def test_the_summary_sits_at_the_top_of_the_html_page():
    from benchsuite.reporting.html_page import to_html

    png = b"\x89PNG fake"
    row = {"dataset": "digits", "classes": [0, 1], "class_names": "0 vs 1", "n_train": 4, "architecture": "mlp",
           "optimizer": "sgd", "role": "optimizer", "models": 1, "models_requested": 1, "test_acc_mean": 0.9,
           "test_acc_std": 0.0, "gain_pp": None, "neg_log2_p_fit": None, "candidates": None, "seconds": 1.0}  # fmt: skip
    page = to_html([row], figures=[("summary", png), ("gain_digits_0v1_mlp", png)])
    assert page.index('id="summary-figure"') < page.index('id="leaderboard-heading"') < page.index('id="figures-heading"')
    assert page.count("<figure") == 2


def test_with_many_optimizers_the_gain_figure_colours_the_ends_and_sgd(tmp_path):
    """33 bands hide each other: from 13 optimizers on, the 3 best, the 3 worst and SGD keep colour
    and band, the others are thin grey lines (still drawn, each at its gains)."""
    names = tuple(f"opt{i:02d}" for i in range(15)) + ("sgd", "gnc")
    folder = make_results(tmp_path / "out", pairs=((0, 1),), widths=("1",), optimizers=names, models=3)
    with Store(folder / "results.sqlite", read_only=True) as store:
        data = PlotData.from_store(store)
    figure = figures(data)["gain_digits_0v1_mlp"]
    order = by_mean_gain(data.rows)
    assert len(order) == 16
    coloured = [*order[:3], *[m for m in order[3:-3] if m == "sgd"], *order[-3:]]
    legend = [text.get_text() for text in figure.legends[0].get_texts()]
    assert legend == [m for m in order if m in coloured] + [f"the other {16 - len(coloured)}"]
    (axes,) = [a for a in figure.axes if a.get_title()]
    drawn = lines(axes, "gain ")
    assert set(drawn) == set(order)
    for method, line in drawn.items():
        assert (line.get_color() == "0.72") == (method not in coloured), method
    assert len(axes.collections) == len(coloured)  # a band each, none for the grey lines
    figure.savefig(io.BytesIO(), format="png", dpi=50)


def test_the_summary_by_architecture_keeps_one_order_and_ranks_each_panel(many):
    data, made = many
    assert list(made)[:2] == ["summary", "summary_by_architecture"]  # two widths: both at the top
    figure = made["summary_by_architecture"]
    order = [m for m, *_ in summary_intervals(data.rows)]
    panels = [a for a in figure.axes if a.get_title()]
    assert [a.get_title() for a in panels] == ["mlp w=1 d=4", "mlp w=1/6 d=4"]
    for axes in panels:
        own = [r for r in data.rows if r["architecture"] == axes.get_title()]
        table = summary_intervals(own)
        dots = lines(axes, "architecture ")
        ranks = {t.get_gid()[len("rank ") :]: t.get_text() for t in axes.texts if (t.get_gid() or "").startswith("rank ")}
        for rank, (method, mean, *_rest) in enumerate(table, start=1):
            assert mean == pytest.approx(fmean(r["gain_pp"] for r in own if r["optimizer"] == method))
            assert dots[method].get_xdata()[0] == mean
            assert dots[method].get_ydata()[0] == len(order) - 1 - order.index(method)  # the overall order
            assert ranks[method] == f"#{rank}"
    width, height = figure.get_size_inches()
    assert width <= 14 and height <= 16


def test_one_architecture_draws_no_summary_by_architecture(tmp_path):
    folder = make_results(tmp_path / "out", pairs=((0, 1),), widths=("1",), optimizers=MANY, models=4)
    with Store(folder / "results.sqlite", read_only=True) as store:
        made = figures(PlotData.from_store(store))
    assert "summary" in made and "summary_by_architecture" not in made
