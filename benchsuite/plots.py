"""Figures of protocol.md ("Aggregation and figures"), drawn from a result folder's database.

- accuracy: mean test accuracy against N, one line per width or depth, with error bars (std over
  training sets, ddof 0), one panel per method so that G&C and SGD sit side by side on a shared
  y axis. A study with a single N (the ablations) plots accuracy against the architecture variant
  instead, one series per method.
- fit probability: -log2 P(train err = 0) of each baseline against N, with the line y = N that
  independent coin flips would give.
- scatter: each network's normalized training cross-entropy (benchsuite.metrics) against its
  test accuracy, one panel per normalization, for suites that asked for those metrics.
- metric: for each metric a suite asked for (docs/diagnostics.md), each leaderboard row's mean
  metric (x, with its interval) against its mean test accuracy (y, with its interval), one panel
  per method, optimizers and the baseline side by side on shared axes; colour by architecture
  variant, marker size by N.

The numbers come from benchsuite.leaderboard's rows (the same aggregation as the leaderboard, so a
figure and a table never disagree) and, for the scatter, from the per-network rows. Figures are
matplotlib `Figure` objects built without pyplot: no global state and no display, and saving
renders with the Agg (PNG) and SVG canvases without switching a notebook's own backend;
matplotlib is optional (`pip install benchsuite[plots]`) and imported only here, when asked.
"""

from __future__ import annotations

import io
import re
from collections import defaultdict
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from benchsuite import plot_gains
from benchsuite.errors import BenchsuiteError
from benchsuite.escaping import plot_text

FORMATS = ("png", "svg")
SCATTER_METRICS = ("train_loss_lipschitz", "train_loss_frobenius")
SCATTER_TITLES = {
    "train_loss_lipschitz": "logits / Lipschitz estimate",
    "train_loss_frobenius": "logits / prod ||W_l||_F / 3",
}
PANEL_SIZE = (4.2, 3.4)  # inches per panel
MAX_METHOD_PANELS = 8  # beyond this the accuracy figure's panel per method is not drawn (plot_gains)
# matplotlib salts SVG element ids with a random uuid unless given a salt: a fixed one, so files repeat
REPRODUCIBLE = {"svg.hashsalt": "benchsuite"}


def _matplotlib():
    """Import matplotlib lazily: it is an optional dependency, needed for figures only."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise BenchsuiteError(
            "figures need matplotlib: pip install 'benchsuite[plots]' (or pip install matplotlib)"
        ) from None
    return Figure


# ---------------------------------------------------------------------------------------------
# the data behind the figures


@dataclass
class PlotData:
    """What the figures are drawn from: leaderboard rows, cells and per-network metric rows."""

    rows: list[dict[str, Any]]
    cells: list[dict[str, Any]]
    metric_rows: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_store(cls, store) -> PlotData:
        from benchsuite.leaderboard import leaderboard_from_store

        return cls(leaderboard_from_store(store), store.cells(), store.network_metric_rows())

    def variants(self) -> dict[str, dict[str, str]]:
        """Architecture label -> its name, width and depth (as stored)."""
        return {
            c["architecture"]: {
                "name": c["architecture_name"],
                "width": c["width"],
                "depth": c["depth"],
            }
            for c in self.cells
        }

    def order(self, key: str) -> dict[str, int]:
        """First-appearance order of a cell column (the suite's own order: cells are stored as
        the suite expands), so widths, depths and methods keep the order the suite lists them."""
        seen: dict[str, int] = {}
        for cell in self.cells:
            seen.setdefault(str(cell[key]), len(seen))
        return seen


@dataclass(frozen=True)
class Group:
    """One figure's worth of rows: a task and an architecture family."""

    dataset: str
    classes: tuple[int, int]
    class_names: str
    architecture: str

    @property
    def stem(self) -> str:
        raw = f"{self.dataset}_{self.classes[0]}v{self.classes[1]}_{self.architecture}"
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", raw)

    @property
    def title(self) -> str:
        return plot_text(self.raw_title)

    @property
    def raw_title(self) -> str:
        return f"{self.dataset} {self.class_names} ({self.classes[0]} vs {self.classes[1]}), {self.architecture}"


def _width_key(width: str) -> tuple:
    text = width.strip()
    try:
        return (0, Fraction(text.rstrip("*")), 0 if text.endswith("*") else 1)
    except (ValueError, ZeroDivisionError):
        return (1, text)


def sweep_of(variants: list[dict[str, str]]) -> str:
    """'width', 'depth', 'width-depth' or '' (one variant): what the lines of a group vary."""
    widths = {v["width"] for v in variants}
    depths = {v["depth"] for v in variants}
    if len(widths) > 1 and len(depths) > 1:
        return "width-depth"
    if len(widths) > 1:
        return "width"
    if len(depths) > 1:
        return "depth"
    return ""


def variant_label(variant: dict[str, str], sweep: str) -> str:
    """The legend or tick text of an architecture variant, as plain text (no math parsing)."""
    return plot_text(_variant_label(variant, sweep))


def _variant_label(variant: dict[str, str], sweep: str) -> str:
    if sweep == "width":
        return f"w={variant['width']}"
    if sweep == "depth":
        return f"depth {variant['depth']}"
    if sweep == "width-depth":
        return f"w={variant['width']}, depth {variant['depth']}"
    return f"w={variant['width']}" + (
        "" if variant["depth"] in ("None", "") else f", depth {variant['depth']}"
    )


def grouped_rows(data: PlotData) -> dict[Group, list[dict]]:
    variants = data.variants()
    groups: dict[Group, list[dict]] = defaultdict(list)
    for row in data.rows:
        name = variants[row["architecture"]]["name"]
        group = Group(row["dataset"], tuple(row["classes"]), row["class_names"], name)
        groups[group].append(row)
    return dict(groups)


def sorted_variants(rows: list[dict], data: PlotData) -> list[str]:
    """Architecture labels of the rows, by width (numerically) then depth (suite order)."""
    variants = data.variants()
    depth_order = data.order("depth")
    labels = {r["architecture"] for r in rows}
    return sorted(
        labels,
        key=lambda a: (_width_key(variants[a]["width"]), depth_order.get(variants[a]["depth"], 0)),
    )


def method_labels(rows: list[dict], data: PlotData, role: str | None = None) -> list[str]:
    """Method labels, baselines first, each in suite order."""
    order = data.order("optimizer")
    roles = {r["optimizer"]: r["role"] for r in rows}
    chosen = [m for m in roles if role is None or roles[m] == role]
    return sorted(chosen, key=lambda m: (roles[m] != "baseline", order.get(m, 0)))


def _colors(count: int, colormap: str = "viridis"):
    from matplotlib import colormaps

    cmap = colormaps[colormap]
    return [cmap(0.1 + 0.8 * i / max(count - 1, 1)) for i in range(count)]


# ---------------------------------------------------------------------------------------------
# figures


def accuracy_figure(group: Group, rows: list[dict], data: PlotData):
    """Test accuracy (%) against N, one line per variant, a panel per method (shared y)."""
    Figure = _matplotlib()
    methods = method_labels(rows, data)
    architectures = sorted_variants(rows, data)
    variants = data.variants()
    sweep = sweep_of([variants[a] for a in architectures])
    n_values = sorted({r["n_train"] for r in rows})
    by_key = {(r["optimizer"], r["architecture"], r["n_train"]): r for r in rows}

    if len(n_values) == 1:  # single-N study: accuracy against the architecture variant
        figure = Figure(
            figsize=(max(PANEL_SIZE[0], 1.1 * len(architectures) + 2.5), PANEL_SIZE[1]),
            layout="constrained",
        )
        axes = figure.add_subplot()
        n = n_values[0]
        names = [variant_label(variants[a], sweep) for a in architectures]
        for method, color in zip(methods, _colors(len(methods), "tab10")):
            xs, ys, errors = [], [], []
            for i, arch in enumerate(architectures):
                row = by_key.get((method, arch, n))
                if row is None or row["test_acc_mean"] is None:
                    continue
                xs.append(i)
                ys.append(100 * row["test_acc_mean"])
                errors.append(100 * row["test_acc_std"])
            axes.errorbar(xs, ys, yerr=errors, marker="o", capsize=3, label=plot_text(method), color=color)
        axes.set_xticks(range(len(architectures)), names)
        axes.set_xlabel(sweep or "architecture")
        axes.set_ylabel("test accuracy (%)")
        axes.set_title(f"{group.title}, N = {n}", fontsize=9)
        axes.legend(fontsize=7)
        axes.grid(alpha=0.3)
        return figure

    figure = Figure(figsize=(PANEL_SIZE[0] * len(methods), PANEL_SIZE[1]), layout="constrained")
    panels = figure.subplots(1, len(methods), sharey=True, squeeze=False)[0]
    colors = _colors(len(architectures))
    for axes, method in zip(panels, methods):
        for arch, color in zip(architectures, colors):
            points = [by_key[(method, arch, n)] for n in n_values if (method, arch, n) in by_key]
            points = [p for p in points if p["test_acc_mean"] is not None]
            if not points:
                continue
            axes.errorbar(
                [p["n_train"] for p in points],
                [100 * p["test_acc_mean"] for p in points],
                yerr=[100 * p["test_acc_std"] for p in points],
                marker="o", markersize=3, capsize=2, color=color,
                label=variant_label(variants[arch], sweep),
            )  # fmt: skip
        axes.set_title(plot_text(method))
        axes.set_xlabel("N (training images)")
        axes.grid(alpha=0.3)
    panels[0].set_ylabel("test accuracy (%)")
    panels[-1].legend(fontsize=7, title=sweep or None, title_fontsize=7)
    figure.suptitle(group.title, fontsize=9)
    return figure


def fit_probability_figure(group: Group, rows: list[dict], data: PlotData):
    """-log2 P(train err = 0) of each baseline against N, with the line y = N."""
    Figure = _matplotlib()
    methods = method_labels(rows, data, role="baseline")
    architectures = sorted_variants(rows, data)
    variants = data.variants()
    sweep = sweep_of([variants[a] for a in architectures])
    n_values = sorted({r["n_train"] for r in rows})
    by_key = {(r["optimizer"], r["architecture"], r["n_train"]): r for r in rows}
    figure = Figure(figsize=(PANEL_SIZE[0] * len(methods), PANEL_SIZE[1]), layout="constrained")
    panels = figure.subplots(1, len(methods), sharey=True, squeeze=False)[0]
    colors = _colors(len(architectures))
    for axes, method in zip(panels, methods):
        axes.plot(n_values, n_values, linestyle="--", color="0.5", label="y = N", gid="y=N")
        for arch, color in zip(architectures, colors):
            points = [by_key.get((method, arch, n)) for n in n_values]
            points = [p for p in points if p is not None and p["neg_log2_p_fit"] is not None]
            if points:
                axes.plot(
                    [p["n_train"] for p in points], [p["neg_log2_p_fit"] for p in points],
                    marker="o", markersize=3, color=color, label=variant_label(variants[arch], sweep),
                )  # fmt: skip
        axes.set_title(plot_text(method))
        axes.set_xlabel("N (training images)")
        axes.grid(alpha=0.3)
    panels[0].set_ylabel("-log2 P(train err = 0)")
    panels[-1].legend(fontsize=7)
    figure.suptitle(group.title, fontsize=9)
    return figure


def scatter_n(rows: list[dict]) -> int:
    """The N a scatter shows: 16 (protocol.md's single-N studies) when present, else the largest."""
    values = {r["n_train"] for r in rows}
    return 16 if 16 in values else max(values)


def scatter_figure(group: Group, metric_rows: list[dict], data: PlotData, n_train: int):
    """Normalized training loss (x) against test accuracy (y) per network, one panel per metric.

    Colour families by method (G&C blues, first optimizer oranges, ...), shade by variant. The
    points are rasterized inside the SVG (thousands of markers would make it megabytes); axes
    and text stay vector."""
    Figure = _matplotlib()
    metrics = [m for m in SCATTER_METRICS if any(r["metric"] == m for r in metric_rows)]
    rows = [r for r in metric_rows if r["n_train"] == n_train]
    methods = method_labels([{"optimizer": r["optimizer"], "role": r["role"]} for r in rows], data)
    architectures = sorted_variants(rows, data)
    variants = data.variants()
    sweep = sweep_of([variants[a] for a in architectures])
    families = ["Blues", "Oranges", "Greens", "Purples", "Reds", "Greys"]
    figure = Figure(
        figsize=(PANEL_SIZE[0] * len(metrics) + 1.5, PANEL_SIZE[1] + 0.3), layout="constrained"
    )
    panels = figure.subplots(1, len(metrics), sharey=True, squeeze=False)[0]
    for axes, metric in zip(panels, metrics):
        for m_index, method in enumerate(methods):
            shades = _colors(len(architectures) + 1, families[m_index % len(families)])[1:]
            for arch, color in zip(architectures, shades):
                points = [
                    r for r in rows
                    if r["metric"] == metric and r["optimizer"] == method and r["architecture"] == arch
                    and r["value"] is not None
                ]  # fmt: skip
                if not points:
                    continue
                axes.scatter(
                    [p["value"] for p in points], [100 * p["test_acc"] for p in points],
                    s=6, alpha=0.5, color=color, linewidths=0, rasterized=True,
                    label=f"{plot_text(method)}, {variant_label(variants[arch], sweep)}",
                )  # fmt: skip
        axes.set_title(plot_text(SCATTER_TITLES.get(metric, metric)), fontsize=9)
        axes.set_xlabel("normalized training cross-entropy")
        axes.grid(alpha=0.3)
    panels[0].set_ylabel("test accuracy (%)")
    panels[-1].legend(fontsize=6, markerscale=2, loc="center left", bbox_to_anchor=(1.0, 0.5))
    figure.suptitle(f"{group.title}, N = {n_train}", fontsize=9)
    return figure


def metric_figure(group: Group, rows: list[dict], data: PlotData, metric: str):
    """Mean metric (x) against mean test accuracy (y) per leaderboard row, a panel per method."""
    Figure = _matplotlib()
    rows = [r for r in rows if (r.get("metrics") or {}).get(metric, {}).get("mean") is not None and r["test_acc_mean"] is not None]
    methods = method_labels(rows, data)
    architectures = sorted_variants(rows, data)
    variants = data.variants()
    sweep = sweep_of([variants[a] for a in architectures])
    n_values = sorted({r["n_train"] for r in rows})
    figure = Figure(figsize=(PANEL_SIZE[0] * max(len(methods), 1), PANEL_SIZE[1] + 0.3), layout="constrained")
    panels = figure.subplots(1, max(len(methods), 1), sharex=True, sharey=True, squeeze=False)[0]
    means = [r["metrics"][metric]["mean"] for r in rows]
    logarithmic = bool(means) and min(means) > 0 and max(means) > 100 * min(means)
    for axes, method in zip(panels, methods):
        for arch, color in zip(architectures, _colors(len(architectures))):
            points = sorted((r for r in rows if r["optimizer"] == method and r["architecture"] == arch), key=lambda r: r["n_train"])
            for i, point in enumerate(points):
                summary = point["metrics"][metric]
                x, y = summary["mean"], 100 * point["test_acc_mean"]
                xerr = _error(x, summary.get("ci_low"), summary.get("ci_high"), 1)
                yerr = _error(y, point.get("test_acc_ci_low"), point.get("test_acc_ci_high"), 100)
                axes.errorbar(
                    [x], [y], xerr=xerr, yerr=yerr, fmt="o", color=color, capsize=2, elinewidth=0.8,
                    markersize=3 + 2 * n_values.index(point["n_train"]),
                    label=variant_label(variants[arch], sweep) if i == 0 else None,
                )  # fmt: skip
        axes.set_title(plot_text(method))
        axes.set_xlabel(plot_text(metric))
        axes.grid(alpha=0.3)
        if logarithmic:
            axes.set_xscale("log")
    panels[0].set_ylabel("test accuracy (%)")
    panels[-1].legend(fontsize=7, title=sweep or None, title_fontsize=7)
    sizes = ", ".join(str(n) for n in n_values)
    figure.suptitle(f"{group.title}: {plot_text(metric)} (marker size: N = {sizes}; bars: intervals)", fontsize=9)
    return figure


def _error(value: float, low: float | None, high: float | None, scale: float):
    """An asymmetric error bar [[below], [above]] from an interval, or None."""
    if low is None or high is None:
        return None
    return [[max(value - scale * low, 0.0)], [max(scale * high - value, 0.0)]]


def row_metrics(rows: list[dict]) -> list[str]:
    """The metrics with a mean in at least one of the rows (a metric undefined everywhere has
    nothing to draw), in the rows' order."""
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(m for m, summary in (row.get("metrics") or {}).items() if summary.get("mean") is not None))
    return list(names)


def figures(data: PlotData) -> dict[str, Any]:
    """File stem -> Figure, for every figure the data supports. With many optimizers
    (plot_gains.MANY_METHODS) a summary comes first and every group gets gain and ranking figures;
    the accuracy figure's panel per method is drawn only up to MAX_METHOD_PANELS methods."""
    made: dict[str, Any] = {}
    many = len({r["optimizer"] for r in plot_gains.gained(data.rows)}) >= plot_gains.MANY_METHODS
    if many:
        made["summary"] = plot_gains.summary_figure(_matplotlib(), "gain over the baseline across all tasks", data.rows)
        if len({r["architecture"] for r in plot_gains.gained(data.rows)}) > 1:
            made["summary_by_architecture"] = plot_gains.architecture_summary_figure(
                _matplotlib(), "gain over the baseline by architecture (rows in the order across all tasks)", data.rows
            )
    metric_groups: dict[Group, list[dict]] = defaultdict(list)
    for r in data.metric_rows:
        if r["metric"] not in SCATTER_METRICS:  # the scatter draws the normalized losses only
            continue
        metric_groups[
            Group(
                r["dataset"],
                tuple(int(c) for c in r["classes"].split(",")),
                r["class_names"],
                r["architecture_name"],
            )
        ].append(r)
    for group, rows in grouped_rows(data).items():
        if len(method_labels(rows, data)) <= MAX_METHOD_PANELS:
            made[f"accuracy_{group.stem}"] = accuracy_figure(group, rows, data)
        if many and plot_gains.gained(rows):
            made.update(_gain_figures(group, rows, data))
        baselines = [r for r in rows if r["role"] == "baseline" and r["neg_log2_p_fit"] is not None]
        if baselines and len({r["n_train"] for r in rows}) > 1:
            made[f"fit_probability_{group.stem}"] = fit_probability_figure(group, baselines, data)
        if metric_groups.get(group):
            n = scatter_n(metric_groups[group])
            made[f"scatter_{group.stem}_N{n}"] = scatter_figure(
                group, metric_groups[group], data, n
            )
        for metric in row_metrics(rows):
            made[f"metric_{re.sub(r'[^A-Za-z0-9_.-]+', '-', metric)}_{group.stem}"] = metric_figure(group, rows, data, metric)
    return made


def _gain_figures(group: Group, rows: list[dict], data: PlotData) -> dict[str, Any]:
    """A group's gain-against-N figure (more than one N) and its ranked dot plot."""
    Figure = _matplotlib()
    variants = sorted_variants(rows, data)
    described = data.variants()
    sweep = sweep_of([described[a] for a in variants])
    names = {a: _variant_label(described[a], sweep) for a in variants}
    made = {}
    if len({r["n_train"] for r in rows}) > 1:
        made[f"gain_{group.stem}"] = plot_gains.gain_figure(Figure, group.raw_title, rows, variants, names)
    made[f"ranking_{group.stem}"] = plot_gains.ranking_figure(Figure, group.raw_title, rows, variants, names)
    return made


def figures_from_store(store) -> list[tuple[str, bytes]]:
    """(caption, PNG bytes) for every figure, to embed in a page; [] without matplotlib."""
    try:
        _matplotlib()
    except BenchsuiteError:
        return []
    rendered = []
    for stem, figure in figures(PlotData.from_store(store)).items():
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=110)
        rendered.append((stem, buffer.getvalue()))
    return rendered


def plot_results(out_dir: str | Path, formats: tuple[str, ...] = FORMATS) -> list[Path]:
    """Write every figure of the result folder OUT into OUT/figures/ as PNG and SVG; the paths."""
    from benchsuite.paths import check_out_folder, make_folder
    from benchsuite.store import Store

    _matplotlib()
    from matplotlib import rc_context

    out_dir = Path(out_dir)
    folder = out_dir if out_dir.is_dir() else out_dir.parent
    target = folder / "figures"
    check_out_folder(target)  # a read-only result folder: one line, before any drawing
    with Store.open_existing(out_dir) as store:
        data = PlotData.from_store(store)
    make_folder(target)
    written = []
    with rc_context(REPRODUCIBLE):
        for stem, figure in figures(data).items():
            for fmt in formats:
                path = target / f"{stem}.{fmt}"
                figure.savefig(path, dpi=150, metadata=_metadata(fmt))
                written.append(path)
    return written


def _metadata(fmt: str) -> dict | None:
    """No creation date in SVGs, so that rerunning `plot` on the same data changes no file."""
    return {"Date": None} if fmt == "svg" else None
