"""The leaderboard as CSV for programs and spreadsheets: one line per row, every number unrounded."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from benchsuite.escaping import csv_cell

CSV_COLUMNS = (
    "dataset", "classes", "class_names", "n_train", "architecture", "optimizer", "role", "prior",
    "training_sets", "models", "models_requested", "exhausted", "test_acc_mean", "test_acc_std",
    "test_acc_ci_low", "test_acc_ci_high", "train_acc_mean", "gain_pp", "gain_ci_low", "gain_ci_high",
    "baseline", "p_value", "p_value_holm", "test", "prob_improvement", "baseline_percentile",
    "neg_log2_p_fit", "candidates", "epochs", "seconds", "confidence", "bootstrap_resamples",
    "bootstrap_seed", "tied_fit_share", "tied_test_share", "neg_log2_p_fit_se", "unreliable",
    "diverged", "timed_out", "diverged_networks",
)  # fmt: skip
COMPARISON_COLUMNS = (
    "dataset", "classes", "class_names", "n_train", "architecture", "optimizer_a", "optimizer_b",
    "training_sets", "test_acc_mean_a", "test_acc_mean_b", "difference_pp", "difference_ci_low",
    "difference_ci_high", "p_value", "p_value_holm", "test", "prob_improvement",
)  # fmt: skip


METRIC_FIELDS = ("mean", "ci_low", "ci_high", "networks")


def metric_columns(rows: Sequence[dict]) -> list[str]:
    """NAME_mean, NAME_ci_low, NAME_ci_high, NAME_networks for every metric the rows carry."""
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row.get("metrics") or {}))
    return [csv_cell(f"{name}_{field}") for name in names for field in METRIC_FIELDS]


def to_csv(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    """`columns` of every row (others ignored; by default CSV_COLUMNS, then the metric columns when
    the rows carry metrics); classes as 'a vs b', spreadsheet formulas defused."""
    columns = [*CSV_COLUMNS, *metric_columns(rows)] if columns is None else columns
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n"
    )
    writer.writeheader()
    for row in rows:
        record = {
            **row,
            "classes": " vs ".join(str(c) for c in row["classes"]),
            "unreliable": "; ".join(row.get("unreliable") or []),
            **{
                csv_cell(f"{name}_{field}"): summary.get(field)
                for name, summary in (row.get("metrics") or {}).items()
                for field in METRIC_FIELDS
            },
        }
        writer.writerow({key: csv_cell(value) for key, value in record.items()})
    return buffer.getvalue()
