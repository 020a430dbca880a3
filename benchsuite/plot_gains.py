"""Figures that stay readable with many optimizers (25 and more): gains over the baseline, not
one panel per method.

- gain: gain over the baseline (pp) against N, one line per optimizer with its interval as a
  faint band, one panel per architecture variant, the legend ordered by mean gain; from 13
  optimizers on the bands hide each other, so only the 3 best, the 3 worst (by mean gain) and
  SGD keep colour and band, the others stay as thin grey lines;
- ranking: a ranked dot plot, one row per optimizer (ordered by mean gain, the same order in
  every panel), the gain and its interval, one panel per variant and N;
- summary: each optimizer's mean gain over every task (pair, N, variant) with a bootstrap interval
  over tasks, ordered, each label with the share of its networks that fit: the figure at the top
  of a page.
- summary by architecture (two or more): the same per architecture, side by side, in the order of
  the summary over all tasks, each optimizer's rank there beside its interval.

The numbers are the leaderboard rows' (gain_pp, gain_ci_low, gain_ci_high), so a figure and the
table never disagree. Drawn with a matplotlib Figure class handed in by benchsuite.plots (no
pyplot, no global state). Callers pass rows of one group (a task and architecture family), or all
rows for the summary.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from statistics import fmean
from typing import Any

from benchsuite.aggregate import fit_share
from benchsuite.escaping import plot_text

MANY_METHODS = 5  # from this many optimizers on, the per-method panels stop being comparable
HIGHLIGHT_FROM = 13  # from this many on, the gain figure colours only the ends and the reference
HIGHLIGHTED = 3  # the best and the worst by mean gain that keep their colour
REFERENCE = "sgd"  # the across-task table's reference optimizer (P(> sgd)), coloured wherever it ran
GREY = "0.72"
ROW_INCHES = 0.22  # per optimizer in a dot plot
SUMMARY_RESAMPLES = 2000
SUMMARY_SEED = 0


def gained(rows: Sequence[dict]) -> list[dict]:
    """Optimizer rows that have a gain over the baseline."""
    return [r for r in rows if r["role"] != "baseline" and r.get("gain_pp") is not None]


def by_mean_gain(rows: Sequence[dict]) -> list[str]:
    """Optimizer labels, highest mean gain first (ties by label)."""
    gains: dict[str, list[float]] = defaultdict(list)
    for row in gained(rows):
        gains[row["optimizer"]].append(row["gain_pp"])
    return sorted(gains, key=lambda m: (-fmean(gains[m]), m))


def highlighted(methods: Sequence[str]) -> list[str]:
    """The optimizers the gain figure colours, in the order given (by mean gain): all of them up
    to HIGHLIGHT_FROM; beyond, the HIGHLIGHTED best and worst and the reference."""
    if len(methods) < HIGHLIGHT_FROM:
        return list(methods)
    keep = {*methods[:HIGHLIGHTED], *methods[-HIGHLIGHTED:], REFERENCE}
    return [m for m in methods if m in keep]


def styles(count: int) -> list[tuple[Any, str]]:
    """(colour, line style) per line: up to 10 lines tab10's distinct colours; more, tab20's 20
    (paired light and dark), then the same with other dashes."""
    from matplotlib import colormaps

    size = 10 if count <= 10 else 20
    palette = [colormaps[f"tab{size}"](i) for i in range(size)]
    dashes = ["-", "--", ":", "-."]
    return [(palette[i % size], dashes[(i // size) % len(dashes)]) for i in range(count)]


def gain_figure(Figure: Callable, title: str, rows: Sequence[dict], variants: list[str], variant_names: dict[str, str]):
    """Gain (pp) against N, a line and a faint interval band per optimizer (grey and without band
    for those `highlighted` leaves out), a panel per variant."""
    from matplotlib.lines import Line2D

    rows = gained(rows)
    methods = by_mean_gain(rows)
    coloured = highlighted(methods)
    look = dict(zip(coloured, styles(len(coloured))))
    if len(coloured) < len(methods) and REFERENCE in look:
        look[REFERENCE] = ("black", "-")  # the reference stands out among the ends
    grey = [m for m in methods if m not in look]
    by_key = {(r["optimizer"], r["architecture"], r["n_train"]): r for r in rows}
    n_values = sorted({r["n_train"] for r in rows})
    height = max(3.6, 0.17 * len(methods) + 0.8)
    figure = Figure(figsize=(4.2 * len(variants) + 2.6, height), layout="constrained")
    panels = figure.subplots(1, len(variants), sharey=True, squeeze=False)[0]
    for axes, variant in zip(panels, variants):
        axes.axhline(0, color="0.3", linewidth=0.8, gid="zero")
        for method in grey + coloured:  # grey first, underneath
            points = [by_key[(method, variant, n)] for n in n_values if (method, variant, n) in by_key]
            if not points:
                continue
            xs = [p["n_train"] for p in points]
            if method not in look:
                axes.plot(xs, [p["gain_pp"] for p in points], color=GREY, linewidth=0.7, label="_grey",
                          gid=f"gain {method}")  # fmt: skip
                continue
            color, dash = look[method]
            axes.plot(xs, [p["gain_pp"] for p in points], color=color, linestyle=dash, marker="o",
                      markersize=2.5, linewidth=1.2, label=plot_text(method), gid=f"gain {method}")  # fmt: skip
            bands = [p for p in points if p.get("gain_ci_low") is not None]
            if bands:
                axes.fill_between([p["n_train"] for p in bands], [p["gain_ci_low"] for p in bands],
                                  [p["gain_ci_high"] for p in bands], color=color, alpha=0.08, linewidth=0)  # fmt: skip
        axes.set_xscale("log", base=2)
        axes.set_xticks(n_values, [str(n) for n in n_values])
        axes.minorticks_off()
        axes.set_title(plot_text(variant_names.get(variant, variant)), fontsize=9)
        axes.set_xlabel("N (training images)")
        axes.grid(alpha=0.3)
    panels[0].set_ylabel("gain over the baseline (pp)")
    handles, labels = panels[0].get_legend_handles_labels()
    order = {plot_text(m): i for i, m in enumerate(coloured)}  # by mean gain, whatever panel 0 ran
    pairs = sorted(zip(handles, labels), key=lambda pair: order.get(pair[1], len(order)))
    handles, labels = [h for h, _ in pairs], [label for _, label in pairs]
    if grey:
        handles.append(Line2D([], [], color=GREY, linewidth=0.7))
        labels.append(f"the other {len(grey)}")
    figure.legend(handles, labels, loc="outside right upper", fontsize=7, title="by mean gain", title_fontsize=7)
    figure.suptitle(plot_text(title), fontsize=9)
    return figure


def ranking_figure(Figure: Callable, title: str, rows: Sequence[dict], variants: list[str], variant_names: dict[str, str]):
    """A ranked dot plot: a row per optimizer (by mean gain), the gain and its interval, a panel
    per variant (rows of panels) and N (columns)."""
    rows = gained(rows)
    methods = by_mean_gain(rows)
    by_key = {(r["optimizer"], r["architecture"], r["n_train"]): r for r in rows}
    n_values = sorted({r["n_train"] for r in rows})
    positions = {m: len(methods) - 1 - i for i, m in enumerate(methods)}  # the best at the top
    figure = Figure(
        figsize=(2.3 * len(n_values) + 1.8, len(variants) * (ROW_INCHES * len(methods) + 0.9)),
        layout="constrained",
    )
    panels = figure.subplots(len(variants), len(n_values), sharey=True, sharex=True, squeeze=False)
    for row_panels, variant in zip(panels, variants):
        for axes, n in zip(row_panels, n_values):
            axes.axvline(0, color="0.3", linewidth=0.8, gid="zero")
            for method in methods:
                point = by_key.get((method, variant, n))
                if point is None:
                    continue
                y = positions[method]
                low, high = point.get("gain_ci_low"), point.get("gain_ci_high")
                above = low is not None and low > 0
                below = high is not None and high < 0
                color = "#0a7a2a" if above else "#b00020" if below else "0.35"
                if low is not None:
                    axes.plot([low, high], [y, y], color=color, linewidth=1.6, solid_capstyle="butt")
                axes.plot([point["gain_pp"]], [y], "o", color=color, markersize=3.5, gid=f"dot {method}")
            axes.set_title(plot_text(f"{variant_names.get(variant, variant)}, N = {n}"), fontsize=8)
            axes.grid(axis="x", alpha=0.3)
        row_panels[0].set_yticks(range(len(methods)), [plot_text(m) for m in reversed(methods)], fontsize=7)
    for axes in panels[-1]:
        axes.set_xlabel("gain over the baseline (pp)")
    figure.suptitle(plot_text(f"{title}: green, interval above 0; red, below"), fontsize=9)
    return figure


def summary_intervals(rows: Sequence[dict]) -> list[tuple[str, float, float, float, int]]:
    """(optimizer, mean gain over its tasks, interval low, high, tasks), best first: a percentile
    bootstrap over tasks (fixed seed), so a method's luck on one task moves it little."""
    gains: dict[str, list[float]] = defaultdict(list)
    for row in gained(rows):
        gains[row["optimizer"]].append(row["gain_pp"])
    generator = random.Random(SUMMARY_SEED)
    table = []
    for method in sorted(gains):
        values = gains[method]
        means = sorted(fmean(generator.choices(values, k=len(values))) for _ in range(SUMMARY_RESAMPLES))
        low = means[math.floor(0.025 * (SUMMARY_RESAMPLES - 1))]
        high = means[math.ceil(0.975 * (SUMMARY_RESAMPLES - 1))]
        table.append((method, fmean(values), low, high, len(values)))
    return sorted(table, key=lambda t: (-t[1], t[0]))


def interval_dot(axes, y: float, mean: float, low: float, high: float, gid: str) -> None:
    """A summary row: the interval as a bar and the mean as a dot, green where the interval is
    above zero, red where below, grey where it straddles it."""
    color = "#0a7a2a" if low > 0 else "#b00020" if high < 0 else "0.35"
    axes.plot([low, high], [y, y], color=color, linewidth=2, solid_capstyle="butt")
    axes.plot([mean], [y], "o", color=color, markersize=4, gid=gid)


def fit_label(rows: Sequence[dict], method: str) -> str:
    """", fit 62%": the share of the networks the method trained that fit (aggregate.fit_share),
    so a method that rarely interpolates says so beside its gain; "" where rows carry no counts."""
    share = fit_share(row for row in rows if row["optimizer"] == method and row["role"] != "baseline")["fit_share"]
    return "" if share is None else f", fit {100 * share:.0f}%"


def summary_figure(Figure: Callable, title: str, rows: Sequence[dict]):
    """Each optimizer's mean gain over all tasks with a bootstrap interval over tasks, ranked."""
    table = summary_intervals(rows)
    figure = Figure(figsize=(6.4, ROW_INCHES * len(table) + 1.2), layout="constrained")
    axes = figure.add_subplot()
    axes.axvline(0, color="0.3", linewidth=0.8, gid="zero")
    for i, (method, mean, low, high, _) in enumerate(table):
        interval_dot(axes, len(table) - 1 - i, mean, low, high, f"summary {method}")
    axes.set_yticks(range(len(table)), [plot_text(f"{m} ({k} tasks{fit_label(rows, m)})") for m, *_, k in reversed(table)], fontsize=7)
    axes.set_xlabel("mean gain over the baseline (pp)\n95% percentile bootstrap interval, tasks resampled")
    axes.grid(axis="x", alpha=0.3)
    axes.set_title(plot_text(title), fontsize=9)
    return figure


def architecture_summary_figure(Figure: Callable, title: str, rows: Sequence[dict]):
    """The summary once per architecture, side by side: each optimizer's mean gain over that
    architecture's tasks with the bootstrap interval over them, and its rank there ("#1" = the
    highest mean gain). Rows keep the order of the summary over all tasks in every panel, so an
    optimizer that the width or family moves up or down stands out."""
    order = [method for method, *_ in summary_intervals(rows)]
    architectures = sorted({row["architecture"] for row in gained(rows)})
    figure = Figure(figsize=(1.6 + 3.4 * len(architectures), ROW_INCHES * len(order) + 1.4), layout="constrained")
    panels = figure.subplots(1, len(architectures), sharex=True, sharey=True, squeeze=False)[0]  # gains compare across panels
    for axes, architecture in zip(panels, architectures):
        table = summary_intervals([row for row in rows if row["architecture"] == architecture])
        axes.axvline(0, color="0.3", linewidth=0.8, gid="zero")
        for rank, (method, mean, low, high, _) in enumerate(table, start=1):
            y = len(order) - 1 - order.index(method)
            interval_dot(axes, y, mean, low, high, f"architecture {method}")
            axes.annotate(f"#{rank}", (high, y), xytext=(3, 0), textcoords="offset points", va="center", fontsize=6, gid=f"rank {method}")
        axes.set_title(plot_text(architecture), fontsize=8)
        axes.set_xlabel("mean gain (pp), tasks resampled", fontsize=7)
        axes.grid(axis="x", alpha=0.3)
        axes.margins(x=0.1)  # room for the ranks
    panels[0].set_yticks(range(len(order)), [plot_text(m) for m in reversed(order)], fontsize=7)
    figure.suptitle(plot_text(title), fontsize=9)
    return figure
