"""`benchsuite explain DIR`: which diagnostic tracks the gain over the random interpolators.

Across the cells of a run, per architecture family: Spearman's rank correlation between an
optimizer cell's mean metric and that cell's gain, with a bootstrap interval over cells
(benchsuite.correlation). A *cell* here is one optimizer on one training set of one task, N and
architecture; its gain is its networks' mean test accuracy minus the reference baseline's on the
same training set, task, N and architecture (percentage points); its metric is the mean of its
networks' finite values. A second correlation uses the metric relative to the baseline's (the
optimizer cell's mean minus the baseline cell's): does being further from the random
interpolators, in that quantity, go with a larger gain?

Cells are the resampling unit; they share tasks and training sets, so the interval treats them as
exchangeable, which they only roughly are. A correlation pooled over N, widths and optimizers can
also come from a common cause (both the metric and the gain change with N): read it as a
pointer, and look at the plots (`benchsuite plot`) before concluding.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from statistics import fmean
from typing import Any

from benchsuite import statistics as stats
from benchsuite.correlation import spearman, spearman_interval
from benchsuite.errors import BenchsuiteError
from benchsuite.statistics import BootstrapSettings

PAIR_KEYS = ("dataset", "classes", "n_train", "architecture", "training_set_seed")
COLUMNS = (
    "family", "metric", "cells", "rho", "rho_ci_low", "rho_ci_high", "relative_cells", "relative_rho",
    "relative_ci_low", "relative_ci_high",
)  # fmt: skip


@dataclass
class Explanation:
    """The table's rows and how they were obtained."""

    rows: list[dict[str, Any]]
    baseline: str
    settings: BootstrapSettings
    cells: int
    skipped: dict[str, int] = field(default_factory=dict)


def _finite_mean(values: list[float | None]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return fmean(finite) if finite else None


def cell_table(cells: list[dict], networks: list[dict], metric_rows: list[dict], baseline: str) -> tuple[list[dict], dict[str, int]]:
    """One record per optimizer cell with a paired baseline cell: family, gain (pp), and per
    metric the cell's mean and the baseline cell's mean. Also what was left out, and why."""
    accuracies: dict[str, list[float]] = defaultdict(list)
    for row in networks:
        accuracies[row["cell_id"]].append(float(row["test_acc"]))
    values: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for row in metric_rows:
        values[row["cell_id"]][row["metric"]].append(row["value"])
    baselines = {
        tuple(c[k] for k in PAIR_KEYS): c for c in cells if c["role"] == "baseline" and c["optimizer"] == baseline
    }
    table, skipped = [], defaultdict(int)
    for cell in cells:
        if cell["role"] == "baseline":
            continue
        reference = baselines.get(tuple(cell[k] for k in PAIR_KEYS))
        if reference is None or not accuracies.get(reference["cell_id"]):
            skipped["no paired baseline networks"] += 1
            continue
        if not accuracies.get(cell["cell_id"]):
            skipped["no networks"] += 1
            continue
        gain = 100 * (fmean(accuracies[cell["cell_id"]]) - fmean(accuracies[reference["cell_id"]]))
        metrics = {
            name: (_finite_mean(found), _finite_mean(values[reference["cell_id"]].get(name, [])))
            for name, found in values[cell["cell_id"]].items()
        }
        table.append({"cell_id": cell["cell_id"], "family": cell["architecture_name"], "gain": gain, "metrics": metrics})
    return table, dict(skipped)


def correlate(table: list[dict], settings: BootstrapSettings, order: list[str] = ()) -> list[dict[str, Any]]:
    """Per family and metric: Spearman's rho of metric and gain, and of (metric - baseline's) and
    gain, each with its percentile bootstrap interval over cells."""
    families = sorted({record["family"] for record in table})
    rows = []
    for family in families:
        records = [r for r in table if r["family"] == family]
        present = {name for r in records for name in r["metrics"]}
        names = [m for m in order if m in present] + sorted(present - set(order))
        for name in names:
            level = [(r["metrics"][name][0], r["gain"]) for r in records if name in r["metrics"] and r["metrics"][name][0] is not None]
            relative = [
                (r["metrics"][name][0] - r["metrics"][name][1], r["gain"])
                for r in records
                if name in r["metrics"] and None not in r["metrics"][name]
            ]  # fmt: skip
            row = {"family": family, "metric": name}
            row.update(_correlation(level, settings, ("spearman", family, name), ""))
            row.update(_correlation(relative, settings, ("spearman-relative", family, name), "relative_"))
            rows.append(row)
    return rows


def _correlation(pairs: list[tuple[float, float]], settings: BootstrapSettings, identity: tuple, prefix: str) -> dict[str, Any]:
    x, y = [p[0] for p in pairs], [p[1] for p in pairs]
    rho = spearman(x, y) if pairs else None
    low = high = None
    if rho is not None:
        rng = stats.generator(settings, *identity)
        low, high, _ = spearman_interval(x, y, settings.resamples, settings.confidence, rng)
    return {
        f"{prefix}cells": len(pairs), f"{prefix}rho": rho,
        f"{prefix}ci_low" if prefix else "rho_ci_low": low, f"{prefix}ci_high" if prefix else "rho_ci_high": high,
    }  # fmt: skip


def explain(folder, baseline: str | None = None, settings: BootstrapSettings | None = None) -> Explanation:
    """The explanation of the result folder (or database) `folder`."""
    from benchsuite.store import Store

    settings = settings or BootstrapSettings()
    with Store.open_existing(folder) as store:
        runs, cells, networks, metric_rows = store.runs(), store.cells(), store.network_rows(), store.network_metrics()
    suite = runs[-1]["suite"] if runs else {}
    baseline = baseline or suite.get("leaderboard", {}).get("baseline")
    labels = sorted({c["optimizer"] for c in cells if c["role"] == "baseline"})
    if baseline is None or baseline not in labels:
        raise BenchsuiteError(f"{folder}: no baseline {baseline!r} to measure gains against; the folder has {', '.join(labels) or 'none'}")
    if not metric_rows:
        raise BenchsuiteError(f"{folder}: no per-network metrics stored; list some under `metrics:` in the suite (docs/diagnostics.md)")
    table, skipped = cell_table(cells, networks, metric_rows, baseline)
    rows = correlate(table, settings, list(suite.get("metrics", [])))
    rows.sort(key=lambda r: (r["family"], -abs(r["rho"]) if r["rho"] is not None else 1.0, r["metric"]))
    return Explanation(rows, baseline, settings, len(table), skipped)


# ---------------------------------------------------------------------------------------------
# Rendering


def _rho(value: float | None, low: float | None, high: float | None) -> str:
    if value is None:
        return "—"
    text = f"{value:+.2f}"
    if low is not None and high is not None:
        text += f" [{low:+.2f}, {high:+.2f}]" + (" *" if low > 0 or high < 0 else "")
    return text


def display(explanation: Explanation) -> list[dict[str, str]]:
    ci = f"{100 * explanation.settings.confidence:g}% CI"
    return [
        {
            "family": r["family"], "metric": r["metric"], "cells": str(r["cells"]),
            f"ρ(metric, gain) [{ci}]": _rho(r["rho"], r["rho_ci_low"], r["rho_ci_high"]),
            "cells vs baseline": str(r["relative_cells"]),
            f"ρ(metric − baseline's, gain) [{ci}]": _rho(r["relative_rho"], r["relative_ci_low"], r["relative_ci_high"]),
        }
        for r in explanation.rows
    ]  # fmt: skip


def notes(explanation: Explanation) -> list[str]:
    s = explanation.settings
    lines = [
        f"Gain: an optimizer cell's mean test accuracy minus that of the baseline ({explanation.baseline}) on the "
        f"same training set, task, N and architecture (pp); {explanation.cells} cells.",
        "ρ: Spearman's rank correlation across those cells, per architecture family, of the cell's mean metric "
        "(left) or of its mean minus the baseline cell's mean (right) with the gain; * marks an interval that "
        "excludes 0.",
        f"Intervals: {100 * s.confidence:g}% percentile bootstrap over cells, {s.resamples} resamples (seed {s.seed}); "
        "cells share tasks and training sets, and N, width and optimizer can drive both the metric and the gain: "
        "a correlation points where to look (benchsuite plot), it is not a cause.",
    ]
    if explanation.skipped:
        lines.append("Left out: " + "; ".join(f"{count} cells ({why})" for why, count in sorted(explanation.skipped.items())) + ".")
    return lines


def to_markdown(explanation: Explanation) -> str:
    from benchsuite.escaping import markdown_text
    from benchsuite.reporting.markdown import markdown_table

    lines = ["# Which diagnostic tracks the gain over the random interpolators", ""]
    if explanation.rows:
        lines += markdown_table(display(explanation)) + [""]
    lines += [f"- {markdown_text(note)}" for note in notes(explanation)]
    return "\n".join(lines) + "\n"


def to_csv(explanation: Explanation) -> str:
    import csv
    import io

    from benchsuite.escaping import csv_cell

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in explanation.rows:
        writer.writerow({key: csv_cell(row[key]) for key in COLUMNS})
    return buffer.getvalue()


def to_json(explanation: Explanation) -> str:
    record = {"baseline": explanation.baseline, "cells": explanation.cells, "skipped": explanation.skipped,
              "bootstrap": {**explanation.settings.as_dict(), "method": "percentile bootstrap over cells"},
              "rows": [{k: stats.finite_or_none(v) for k, v in r.items()} for r in explanation.rows]}  # fmt: skip
    return json.dumps(record, indent=2, allow_nan=False) + "\n"


def to_terminal(explanation: Explanation, console) -> None:
    from rich.markup import escape
    from rich.table import Table

    from benchsuite.escaping import terminal_text

    shown = display(explanation)
    if shown:
        table = Table(title="Which diagnostic tracks the gain over the random interpolators", header_style="bold")
        for header in shown[0]:
            table.add_column(header, justify="left" if header in ("family", "metric") else "right")
        for row in shown:
            table.add_row(*(escape(terminal_text(v)) for v in row.values()))
        console.print(table)
    for note in notes(explanation):
        console.print(f"[dim]{escape(terminal_text(note))}[/]", highlight=False)


RENDERERS: dict[str, Any] = {"md": to_markdown, "csv": to_csv, "json": to_json}
