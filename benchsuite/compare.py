"""`benchsuite compare`: two result folders row by row, or two optimizers of one folder task by task.

Both are paired designs on the same training sets (training-set seeds are part of the suite), so
both use benchsuite.statistics.compare_sets: difference of means with a paired hierarchical
bootstrap interval, a sign-flip test on per-training-set differences, probability of improvement,
and Holm's correction across the rows of one comparison.

- folders: the same suite run twice (another machine, another version of a plugin): does anything
  move? Each (task, method) present in both is one row, A minus B.
- optimizers: A vs B on every task both ran; with a summary of wins and the mean difference.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from benchsuite import statistics as stats
from benchsuite.errors import BenchsuiteError, closest
from benchsuite.publish import read_source
from benchsuite.statistics import BootstrapSettings
from benchsuite.store import Store, database_of

COLUMNS = (
    "dataset", "classes", "n_train", "architecture", "optimizer_a", "optimizer_b", "training_sets",
    "test_acc_mean_a", "test_acc_mean_b", "difference_pp", "difference_ci_low", "difference_ci_high",
    "p_value", "p_value_holm", "test", "prob_improvement",
)  # fmt: skip


@dataclass
class Comparison:
    """Rows of one comparison, what was compared, and what only one side had."""

    title: str
    label_a: str
    label_b: str
    rows: list[dict[str, Any]]
    only_a: list[tuple] = field(default_factory=list)
    only_b: list[tuple] = field(default_factory=list)
    kind: str = "optimizers"  # or "folders": then A and B are folders and each row is one method

    def summary(self) -> dict[str, Any]:
        differences = [r["difference_pp"] for r in self.rows if r["difference_pp"] is not None]
        return {
            "rows": len(self.rows),
            "a_better": sum(1 for d in differences if d > 0),
            "b_better": sum(1 for d in differences if d < 0),
            "ties": sum(1 for d in differences if d == 0),
            "mean_difference_pp": sum(differences) / len(differences) if differences else None,
            "significant_after_holm": sum(
                1 for r in self.rows if r["p_value_holm"] is not None and r["p_value_holm"] < 0.05
            ),
            "only_in_a": len(self.only_a),
            "only_in_b": len(self.only_b),
        }


def _accuracies(path) -> dict[tuple, dict[int, Any]]:
    with Store(database_of(path), read_only=True) as store:
        return stats.group_test_accuracies(store.network_rows())


def _row(
    task: tuple,
    a_label: str,
    b_label: str,
    a_sets,
    b_sets,
    settings: BootstrapSettings,
    identity: tuple,
) -> dict[str, Any]:
    dataset, classes, n_train, architecture = task
    result = stats.compare_sets(a_sets, b_sets, settings, identity)
    seeds_a, seeds_b = stats.nonempty_seeds(a_sets), stats.nonempty_seeds(b_sets)
    return {
        "dataset": dataset, "classes": [int(c) for c in classes.split(",")], "n_train": n_train,
        "architecture": architecture, "optimizer_a": a_label, "optimizer_b": b_label,
        "test_acc_mean_a": sum(float(a_sets[s].mean()) for s in seeds_a) / len(seeds_a) if seeds_a else None,
        "test_acc_mean_b": sum(float(b_sets[s].mean()) for s in seeds_b) / len(seeds_b) if seeds_b else None,
        **result,
    }  # fmt: skip


def _holm(rows: list[dict]) -> list[dict]:
    for row, adjusted in zip(rows, stats.holm([r["p_value"] for r in rows])):
        row["p_value_holm"] = adjusted
    return rows


def compare_folders(
    path_a, path_b, settings: BootstrapSettings | None = None, any_suite: bool = False
) -> Comparison:
    """Row-by-row differences between two result folders of the same resolved suite."""
    settings = settings or BootstrapSettings()
    source_a, source_b = read_source(path_a), read_source(path_b)
    if source_a.suite_id != source_b.suite_id and not any_suite:
        raise BenchsuiteError(
            f"{path_a} (suite {source_a.suite.get('name')!r}, id {source_a.suite_id}) and {path_b} (suite "
            f"{source_b.suite.get('name')!r}, id {source_b.suite_id}) ran different resolved suites; "
            "pass --any-suite to compare the rows they share anyway"
        )
    a, b = _accuracies(path_a), _accuracies(path_b)
    rows = [
        _row(key[:4], key[4], key[4], a[key], b[key], settings, ("folders",) + key)
        for key in sorted(a, key=str)
        if key in b and stats.shared_seeds(a[key], b[key])
    ]
    return Comparison(
        f"{path_a} vs {path_b}", str(path_a), str(path_b), _holm(rows),
        only_a=sorted((k for k in a if k not in b), key=str), only_b=sorted((k for k in b if k not in a), key=str),
        kind="folders",
    )  # fmt: skip


def compare_optimizers(
    path, optimizer_a: str, optimizer_b: str, settings: BootstrapSettings | None = None
) -> Comparison:
    """Optimizer A against B (either may be a baseline) on every task of one folder both ran."""
    settings = settings or BootstrapSettings()
    accuracies = _accuracies(path)
    labels = {key[4] for key in accuracies}
    for label in (optimizer_a, optimizer_b):
        if label not in labels:
            raise BenchsuiteError(
                f"{path}: no optimizer or baseline labelled {label!r}; {closest(label, labels)}"
            )
    if optimizer_a == optimizer_b:
        raise BenchsuiteError("compare two different optimizers")
    tasks_a = {key[:4] for key in accuracies if key[4] == optimizer_a}
    tasks_b = {key[:4] for key in accuracies if key[4] == optimizer_b}
    rows = [
        _row(task, optimizer_a, optimizer_b, accuracies[task + (optimizer_a,)], accuracies[task + (optimizer_b,)],
             settings, task + (optimizer_a, optimizer_b))
        for task in sorted(tasks_a & tasks_b, key=str)
        if stats.shared_seeds(accuracies[task + (optimizer_a,)], accuracies[task + (optimizer_b,)])
    ]  # fmt: skip
    return Comparison(
        f"{optimizer_a} vs {optimizer_b} in {path}",
        optimizer_a,
        optimizer_b,
        _holm(rows),
        only_a=sorted(tasks_a - tasks_b, key=str),
        only_b=sorted(tasks_b - tasks_a, key=str),
    )


# ---------------------------------------------------------------------------------------------
# Rendering


def display(comparison: Comparison) -> list[dict[str, str]]:
    from benchsuite.reporting.display import comparison_display

    shown = comparison_display(comparison.rows)
    if comparison.kind != "folders":
        return shown
    # one method per row: A and B are the folders, so the two label columns become one
    merged = []
    for row in shown:
        line = {
            "task": row["task"],
            "N": row["N"],
            "architecture": row["architecture"],
            "method": row["A"],
        }
        line.update((k, v) for k, v in row.items() if k not in line and k not in ("A", "B"))
        merged.append(line)
    return merged


def summary_line(comparison: Comparison) -> str:
    s = comparison.summary()
    mean = "—" if s["mean_difference_pp"] is None else f"{s['mean_difference_pp']:+.2f} pp"
    line = (
        f"{s['rows']} paired rows: A ({comparison.label_a}) higher on {s['a_better']}, B ({comparison.label_b}) "
        f"higher on {s['b_better']}, equal on {s['ties']}; mean A − B {mean}; "
        f"{s['significant_after_holm']} significant at 0.05 after Holm"
    )
    if s["only_in_a"] or s["only_in_b"]:
        line += f"; only in A: {s['only_in_a']}, only in B: {s['only_in_b']}"
    return line


def to_markdown(comparison: Comparison) -> str:
    from benchsuite.escaping import markdown_text
    from benchsuite.reporting.markdown import markdown_table

    lines = [f"# Compare: {markdown_text(comparison.title)}", "", markdown_text(summary_line(comparison)), ""]
    if comparison.rows:
        lines += markdown_table(display(comparison))
    return "\n".join(lines) + "\n"


def to_csv(comparison: Comparison) -> str:
    from benchsuite.reporting.csv_table import to_csv as rows_to_csv

    return rows_to_csv(comparison.rows, COLUMNS)


def to_json(comparison: Comparison) -> str:
    record = {
        "a": comparison.label_a,
        "b": comparison.label_b,
        "summary": comparison.summary(),
        "rows": comparison.rows,
    }
    return json.dumps(record, indent=2, allow_nan=False) + "\n"


def to_terminal(comparison: Comparison, console) -> None:
    from rich.markup import escape
    from rich.table import Table

    from benchsuite.escaping import terminal_text

    shown = display(comparison)
    if shown:
        table = Table(title=escape(terminal_text(f"Compare: {comparison.title}")), header_style="bold")
        for header in shown[0]:
            table.add_column(
                header,
                justify="left"
                if header in ("task", "architecture", "A", "B", "method")
                else "right",
            )
        for row in shown:
            table.add_row(
                *(escape(terminal_text(v)) for v in row.values())
            )  # labels like "mlp[width=1]" are not markup
        console.print(table)
    console.print(escape(terminal_text(summary_line(comparison))), highlight=False)


RENDERERS: dict[str, Any] = {"md": to_markdown, "csv": to_csv, "json": to_json}


def render(comparison: Comparison, fmt: str) -> str:
    return RENDERERS[fmt](comparison)
