"""Leaderboard renderers: terminal (rich), Markdown, CSV and JSON, all from the same rows."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Sequence

from rich.console import Console
from rich.table import Table

CSV_COLUMNS = (
    "dataset", "classes", "class_names", "n_train", "architecture", "optimizer", "role", "prior",
    "training_sets", "models", "models_requested", "exhausted", "test_acc_mean", "test_acc_std",
    "train_acc_mean", "gain_pp", "baseline", "neg_log2_p_fit", "candidates", "epochs", "seconds",
)  # fmt: skip


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def _signed(value: float | None) -> str:
    return "—" if value is None else f"{value:+.1f}"


def _number(value: float | int | None, digits: int = 1) -> str:
    if value is None:
        return "—"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}f}"


def _task(row: dict) -> str:
    a, b = row["classes"]
    return f"{row['dataset']} {a} vs {b}"


def display_rows(rows: Sequence[dict]) -> list[dict[str, str]]:
    """The columns a person reads, formatted once for every text renderer."""
    shown = []
    for row in rows:
        found = f"{row['models']}" + ("" if row["models"] >= row["models_requested"] else f"/{row['models_requested']}")
        shown.append(
            {
                "task": _task(row),
                "N": str(row["n_train"]),
                "architecture": row["architecture"],
                "optimizer": row["optimizer"] + (" (baseline)" if row["role"] == "baseline" else ""),
                "test acc %": f"{_percent(row['test_acc_mean'])} ± {_percent(row['test_acc_std'])}",
                "gain pp": _signed(row["gain_pp"]),
                "-log2 P(fit)": _number(row["neg_log2_p_fit"], 2),
                "networks": found,
                "candidates": _number(row["candidates"]),
                "seconds": _number(row["seconds"]),
            }
        )
    return shown


def to_markdown(rows: Sequence[dict], title: str = "Leaderboard") -> str:
    shown = display_rows(rows)
    lines = [f"# {title}", ""]
    lines.append(
        "Mean test accuracy of interpolating networks (mean ± std over training sets); gain in "
        "percentage points over the random-interpolator baseline on the same training sets."
    )
    lines.append("")
    if not shown:
        return "\n".join(lines + ["(no finished cells)", ""])
    headers = list(shown[0])
    lines.append("| " + " | ".join(headers) + " |")
    lines.append("|" + "|".join("---" if h in ("task", "architecture", "optimizer") else "---:" for h in headers) + "|")
    for row in shown:
        lines.append("| " + " | ".join(row[h].replace("|", "\\|") for h in headers) + " |")
    return "\n".join(lines) + "\n"


def to_csv(rows: Sequence[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "classes": " vs ".join(str(c) for c in row["classes"])})
    return buffer.getvalue()


def to_json(rows: Sequence[dict]) -> str:
    return json.dumps(list(rows), indent=2, allow_nan=False) + "\n"


def to_terminal(rows: Sequence[dict], console: Console, title: str = "Leaderboard") -> None:
    shown = display_rows(rows)
    table = Table(title=title, show_lines=False, header_style="bold")
    if not shown:
        console.print("(no finished cells)")
        return
    for header in shown[0]:
        justify = "left" if header in ("task", "architecture", "optimizer") else "right"
        table.add_column(header, justify=justify)
    previous = None
    for row, raw in zip(shown, rows):
        group = (row["task"], row["N"], row["architecture"])
        if previous is not None and group != previous:
            table.add_section()
        previous = group
        style = "dim" if raw["role"] == "baseline" else None
        gain = row["gain pp"]
        if raw["gain_pp"] is not None:
            gain = f"[green]{gain}[/]" if raw["gain_pp"] > 0 else f"[red]{gain}[/]"
        table.add_row(*[gain if h == "gain pp" else v for h, v in row.items()], style=style)
    console.print(table)


def write_leaderboard(rows: Sequence[dict], out: Path, title: str = "Leaderboard") -> list[Path]:
    """Write leaderboard.md, .csv and .json into `out`; return the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix, text in (("md", to_markdown(rows, title)), ("csv", to_csv(rows)), ("json", to_json(rows))):
        path = out / f"leaderboard.{suffix}"
        path.write_text(text)
        written.append(path)
    return written


def rows_as_records(rows: Sequence[dict]) -> list[dict[str, Any]]:
    return [dict(r) for r in rows]
