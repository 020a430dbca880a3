"""Leaderboard renderers: terminal (rich), Markdown, CSV, JSON and LaTeX, all from the same rows.

Rows are plain dicts (benchsuite.leaderboard.build_rows). When they come as LeaderboardRows the
Markdown and terminal reports add the pairwise comparisons and the cross-task ranking it carries.
The HTML page lives in benchsuite.html_report.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from benchsuite.escaping import csv_cell, markdown_cell, markdown_text, terminal_text

CSV_COLUMNS = (
    "dataset", "classes", "class_names", "n_train", "architecture", "optimizer", "role", "prior",
    "training_sets", "models", "models_requested", "exhausted", "test_acc_mean", "test_acc_std",
    "test_acc_ci_low", "test_acc_ci_high", "train_acc_mean", "gain_pp", "gain_ci_low", "gain_ci_high",
    "baseline", "p_value", "p_value_holm", "test", "prob_improvement", "baseline_percentile",
    "neg_log2_p_fit", "candidates", "epochs", "seconds", "confidence", "bootstrap_resamples",
    "bootstrap_seed", "tied_fit_share", "tied_test_share",
)  # fmt: skip
COMPARISON_COLUMNS = (
    "dataset", "classes", "class_names", "n_train", "architecture", "optimizer_a", "optimizer_b",
    "training_sets", "test_acc_mean_a", "test_acc_mean_b", "difference_pp", "difference_ci_low",
    "difference_ci_high", "p_value", "p_value_holm", "test", "prob_improvement",
)  # fmt: skip
FILE_FORMATS = ("md", "csv", "json", "tex", "html")
TEXT_COLUMNS = ("task", "architecture", "optimizer", "method", "A", "B")
GROUP_COLUMNS = ("task", "architecture")  # terminal: one table per group, named in its title


# ---------------------------------------------------------------------------------------------
# Formatting numbers once for every text renderer


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def _signed(value: float | None) -> str:
    return "—" if value is None else f"{value:+.1f}"


def _number(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "—"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}f}"


def _p(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.2g}" if value < 0.001 else f"{value:.3f}"


def _interval(
    low: float | None, high: float | None, scale: float = 100, signed: bool = False
) -> str:
    if low is None or high is None:
        return ""
    form = "{:+.1f}" if signed else "{:.1f}"
    return f"[{form.format(scale * low)}, {form.format(scale * high)}]"


def _task(row: dict) -> str:
    a, b = row["classes"]
    return f"{row['dataset']} {a} vs {b}"


def _confidence_label(rows: Sequence[dict]) -> str:
    confidence = next((r.get("confidence") for r in rows if r.get("confidence")), 0.95)
    return f"{100 * confidence:g}% CI"


def display_rows(rows: Sequence[dict]) -> list[dict[str, str]]:
    """The columns a person reads, formatted once for every text renderer."""
    ci = _confidence_label(rows)
    shown = []
    for row in rows:
        found = f"{row['models']}" + (
            "" if row["models"] >= row["models_requested"] else f"/{row['models_requested']}"
        )
        test_ci = _interval(row.get("test_acc_ci_low"), row.get("test_acc_ci_high"))
        gain_ci = _interval(row.get("gain_ci_low"), row.get("gain_ci_high"), scale=1, signed=True)
        shown.append(
            {
                "task": _task(row),
                "N": str(row["n_train"]),
                "architecture": row["architecture"],
                "optimizer": row["optimizer"]
                + (" (baseline)" if row["role"] == "baseline" else ""),
                f"test acc % [{ci}]": f"{_percent(row['test_acc_mean'])} {test_ci}".strip(),
                "± std": _percent(row["test_acc_std"]),
                f"gain pp [{ci}]": f"{_signed(row['gain_pp'])} {gain_ci}".strip(),
                "P(better)": _number(row.get("prob_improvement"), 2),
                "p (Holm)": _p(row.get("p_value_holm")),
                "-log2 P(fit)": _number(row["neg_log2_p_fit"], 2),
                "networks": found,
                "candidates": _number(row["candidates"]),
                "seconds": _number(row["seconds"]),
                "tied fits %": _percent(row.get("tied_fit_share")),
                "tied test %": _percent(row.get("tied_test_share")),
            }
        )
    return shown


def comparison_display(
    comparisons: Sequence[dict], rows: Sequence[dict] = ()
) -> list[dict[str, str]]:
    ci = _confidence_label(rows)
    return [
        {
            "task": _task(c),
            "N": str(c["n_train"]),
            "architecture": c["architecture"],
            "A": c["optimizer_a"],
            "B": c["optimizer_b"],
            "sets": str(c["training_sets"]),
            f"A − B pp [{ci}]": f"{_signed(c['difference_pp'])} {_interval(c['difference_ci_low'], c['difference_ci_high'], 1, True)}".strip(),
            "P(A > B)": _number(c["prob_improvement"], 2),
            "p": _p(c["p_value"]),
            "p (Holm)": _p(c.get("p_value_holm")),
        }
        for c in comparisons
    ]


def ranking_display(ranking: Sequence[dict]) -> list[dict[str, str]]:
    return [
        {
            "optimizer": r["optimizer"],
            "mean rank": f"{r['mean_rank']:.2f}",
            "tasks": str(r["tasks"]),
            "first places": str(r["first_places"]),
        }
        for r in ranking
    ]


def method_notes(rows: Sequence[dict]) -> list[str]:
    """Plain sentences saying how every interval and p-value was obtained."""
    first = next((r for r in rows if r.get("bootstrap_resamples")), None)
    if first is None:
        return []
    sets = sorted({r["training_sets"] for r in rows if r.get("p_value") is not None})
    notes = [
        (
            f"Intervals: {100 * first['confidence']:g}% percentile bootstrap, {first['bootstrap_resamples']} "
            f"resamples of training sets and then of networks within each (seed {first['bootstrap_seed']}); "
            "gains resample the same training sets for the optimizer and the baseline."
        ),
        (
            "P(better): probability that a random network of the optimizer has a higher test accuracy than "
            "a random one of the baseline on the same training set (ties count half); ×100 it is the mean "
            "percentile of the optimizer's networks in the baseline's distribution."
        ),
    ]
    fewest = min((r["training_sets"] for r in rows if r.get("training_sets")), default=0)
    if 0 < fewest < 5:
        notes.append(
            f"With {fewest} training set(s) per row, intervals are rough (the bootstrap can only recombine "
            "those sets); suites with more training-set seeds give intervals to rely on."
        )
    if any(r.get("tied_fit_share") is not None for r in rows):
        notes.append(
            "Ties: tied fits % is the share of networks with a training point whose two logits were "
            "exactly equal (the suite's tie_rule decided it: argmax gives it to class 0, strict counts "
            "it wrong); tied test % the share of their test predictions with equal logits."
        )
    if sets:
        smallest = ", ".join(f"{2 / 2**n:.3g} with {n} training sets" for n in sets)
        notes.append(
            "p: two-sided paired sign-flip test on per-training-set mean differences (exact up to 16 "
            f"training sets), Holm-corrected across the rows; smallest possible p: {smallest}."
        )
    return notes


# ---------------------------------------------------------------------------------------------
# Markdown


def _markdown_table(shown: Sequence[dict[str, str]]) -> list[str]:
    headers = list(shown[0])
    lines = ["| " + " | ".join(markdown_cell(h) for h in headers) + " |"]
    lines.append("|" + "|".join("---" if h in TEXT_COLUMNS else "---:" for h in headers) + "|")
    for row in shown:
        lines.append("| " + " | ".join(markdown_cell(row[h]) for h in headers) + " |")
    return lines


def to_markdown(rows: Sequence[dict], title: str = "Leaderboard") -> str:
    shown = display_rows(rows)
    lines = [f"# {markdown_text(title)}", ""]
    lines.append(
        "Mean test accuracy of interpolating networks (mean over training sets of per-set means, with "
        "its bootstrap interval and the std of the per-set means); gain in percentage points over the "
        "random-interpolator baseline on the same training sets, with its interval."
    )
    lines.append("")
    if not shown:
        return "\n".join(lines + ["(no finished cells)", ""])
    lines += _markdown_table(shown)
    lines.append("")
    lines += [f"- {note}" for note in method_notes(rows)]
    ranking = getattr(rows, "ranking", None)
    if (
        ranking
        and len(
            {(r["dataset"], tuple(r["classes"]), r["n_train"], r["architecture"]) for r in rows}
        )
        > 1
    ):
        lines += [
            "",
            "## Across tasks",
            "",
            "Rank by mean test accuracy on each task (1 = best), averaged over tasks.",
            "",
        ]
        lines += _markdown_table(ranking_display(ranking))
        lines += [
            "",
            "Win rate: share of shared tasks on which the row beats the column (ties half).",
            "",
        ]
        lines += _markdown_table(win_rate_display(rows.win_rates))
    comparisons = getattr(rows, "comparisons", None)
    if comparisons:
        lines += ["", "## Paired comparisons", ""]
        lines.append(
            "Every pair within a task, on the training sets both have: difference of means with its "
            "paired bootstrap interval, probability of improvement, sign-flip p-value and Holm's "
            "correction across all comparisons below."
        )
        lines.append("")
        lines += _markdown_table(comparison_display(comparisons, rows))
    return "\n".join(lines) + "\n"


def win_rate_display(win_rates: dict) -> list[dict[str, str]]:
    labels = win_rates["optimizers"]
    return [
        {"optimizer": a, **{b: ("—" if v is None else f"{v:.2f}") for b, v in zip(labels, line)}}
        for a, line in zip(labels, win_rates["matrix"])
    ]


# ---------------------------------------------------------------------------------------------
# CSV and JSON


def to_csv(rows: Sequence[dict], columns: Sequence[str] = CSV_COLUMNS) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n"
    )
    writer.writeheader()
    for row in rows:
        record = {**row, "classes": " vs ".join(str(c) for c in row["classes"])}
        writer.writerow({key: csv_cell(value) for key, value in record.items()})
    return buffer.getvalue()


def to_json(rows: Sequence[dict]) -> str:
    return json.dumps([dict(r) for r in rows], indent=2, allow_nan=False) + "\n"


def statistics_record(rows: Sequence[dict]) -> dict[str, Any]:
    """What LeaderboardRows carries besides the rows, as one JSON-able record."""
    settings = getattr(rows, "settings", None)
    return {
        "reference_baseline": getattr(rows, "reference_baseline", None),
        "bootstrap": settings.as_dict() if settings is not None else None,
        "comparisons": list(getattr(rows, "comparisons", [])),
        "ranking": list(getattr(rows, "ranking", [])),
        "win_rates": getattr(rows, "win_rates", None),
    }


# ---------------------------------------------------------------------------------------------
# LaTeX (booktabs)

_LATEX_ESCAPES = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}  # fmt: skip


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in str(text))


def _latex_interval(low: float | None, high: float | None, scale: float, signed: bool) -> str:
    if low is None or high is None:
        return ""
    form = "{:+.1f}" if signed else "{:.1f}"
    return f" {{\\scriptsize[{form.format(scale * low)}, {form.format(scale * high)}]}}"


def to_latex(
    rows: Sequence[dict], title: str = "Leaderboard", label: str = "tab:leaderboard"
) -> str:
    """A booktabs table (\\usepackage{booktabs}); tasks separated by \\midrule, baselines in italics."""
    ci = _confidence_label(rows).replace("%", r"\%")
    header = ["Task", "$N$", "Architecture", "Method", f"Test acc.\\ \\% [{ci}]", f"Gain pp [{ci}]",
              "$P$(better)", "$p$ (Holm)", "$-\\log_2 P(\\text{fit})$", "Networks"]  # fmt: skip
    lines = [
        "% generated by benchsuite; needs \\usepackage{booktabs} (and amsmath for \\text)",
        "\\begin{table}[t]",
        "\\centering",
        f"\\caption{{{latex_escape(title)}}}",
        f"\\label{{{label}}}",
        "\\begin{tabular}{lrllrrrrrr}",
        "\\toprule",
        " & ".join(header) + " \\\\",
        "\\midrule",
    ]
    previous = None
    for row in rows:
        group = (_task(row), row["n_train"], row["architecture"])
        if previous is not None and group != previous:
            lines.append("\\midrule")
        previous = group
        method = latex_escape(row["optimizer"])
        if row["role"] == "baseline":
            method = f"\\textit{{{method}}}"
        test = _percent(row["test_acc_mean"]) + _latex_interval(
            row.get("test_acc_ci_low"), row.get("test_acc_ci_high"), 100, False
        )
        gain = _signed(row["gain_pp"]).replace("—", "--") + _latex_interval(
            row.get("gain_ci_low"), row.get("gain_ci_high"), 1, True
        )
        cells = [
            latex_escape(_task(row)), str(row["n_train"]), latex_escape(row["architecture"]), method,
            test.replace("—", "--"), gain,
            _number(row.get("prob_improvement"), 2).replace("—", "--"),
            _p(row.get("p_value_holm")).replace("—", "--"),
            _number(row["neg_log2_p_fit"], 2).replace("—", "--"),
            str(row["models"]),
        ]  # fmt: skip
        lines.append(" & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Terminal

# Columns a narrow terminal leaves out, last first; task, method, accuracy and gain always stay.
OPTIONAL_TERMINAL_COLUMNS = (
    "P(better)",
    "p (Holm)",
    "-log2 P(fit)",
    "networks",
    "candidates",
    "seconds",
    "tied fits %",
    "tied test %",
)
WIDE = 200


def terminal_headers(shown: Sequence[dict[str, str]], width: int) -> list[str]:
    """The columns that fit `width`, adding optional ones in order of importance while they fit."""

    def needed(header: str) -> int:
        return max(len(header.split(" [")[0]), *(len(row[header]) for row in shown)) + 2

    headers = [h for h in shown[0] if h != "± std" and h not in OPTIONAL_TERMINAL_COLUMNS]
    used = sum(needed(h) for h in headers)
    for header in OPTIONAL_TERMINAL_COLUMNS:
        if used + needed(header) <= width:
            headers.append(header)
            used += needed(header)
    return [h for h in shown[0] if h in headers]


def to_terminal(rows: Sequence[dict], console: Console, title: str = "Leaderboard") -> None:
    """One compact rich table per (task, architecture), so that rows fit a terminal; piped or
    redirected output gets every column (nothing truncates a log file)."""
    shown = display_rows(rows)
    if not shown:
        console.print("(no finished cells)")
        return
    width = console.width if console.is_terminal else max(console.width, WIDE)
    if not console.is_terminal:
        console.width = width  # print(width=) cannot widen past the console's own width
    per_group = [{k: v for k, v in row.items() if k not in GROUP_COLUMNS} for row in shown]
    headers = terminal_headers(per_group, width)
    ci = _confidence_label(rows)
    console.print(f"[bold]{escape(terminal_text(title))}[/]  [dim]{escape(f'[a, b]: {ci}; dim rows: baselines')}[/]")
    groups: dict[tuple[str, str], list[tuple[dict, dict]]] = {}
    for row, compact, raw in zip(shown, per_group, rows):
        groups.setdefault((row["task"], row["architecture"]), []).append((compact, raw))
    for (task, architecture), members in groups.items():
        table = Table(
            title=escape(terminal_text(f"{task} · {architecture}")), title_justify="left", header_style="bold",
            box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False,
        )  # fmt: skip
        for header in headers:
            short = header.replace(f" [{ci}]", "")
            if header in TEXT_COLUMNS:
                table.add_column(short, justify="left", overflow="fold")
            else:
                table.add_column(short, justify="right", no_wrap=short != header)
        previous = None
        for compact, raw in members:
            if previous is not None and compact["N"] != previous:
                table.add_section()
            previous = compact["N"]
            style = "dim" if raw["role"] == "baseline" else None
            cells = []
            for header in headers:
                value = escape(terminal_text(compact[header]))  # labels such as "mlp[width=1]" are not rich markup
                if header.startswith("gain") and raw["gain_pp"] is not None:
                    colour = _gain_colour(raw)
                    value = f"[{colour}]{value}[/]" if colour else value
                cells.append(value)
            table.add_row(*cells, style=style)
        console.print(table, width=width)
    hidden = [h for h in per_group[0] if h not in headers and h != "± std"]
    notes = method_notes(rows) + (
        [f"Hidden at this width: {', '.join(hidden)} (see leaderboard.md)."] if hidden else []
    )
    for note in notes:
        console.print(f"[dim]{note}[/]", highlight=False, width=width)
    ranking = getattr(rows, "ranking", None)
    if (
        ranking
        and len(ranking) > 1
        and len(
            {(r["dataset"], tuple(r["classes"]), r["n_train"], r["architecture"]) for r in rows}
        )
        > 1
    ):
        summary = Table(
            title="Across tasks (rank by mean test accuracy, 1 = best)", header_style="bold"
        )
        for header in ranking_display(ranking)[0]:
            summary.add_column(header, justify="left" if header == "optimizer" else "right")
        for line in ranking_display(ranking):
            summary.add_row(*(escape(terminal_text(v)) for v in line.values()))
        console.print(summary)


def _gain_colour(row: dict) -> str | None:
    """Green when the whole interval is above zero, red when below, uncoloured when it straddles."""
    low, high = row.get("gain_ci_low"), row.get("gain_ci_high")
    if low is None or high is None:
        return "green" if row["gain_pp"] > 0 else "red"
    if low > 0:
        return "green"
    if high < 0:
        return "red"
    return None


# ---------------------------------------------------------------------------------------------
# Files


def write_leaderboard(
    rows: Sequence[dict],
    out: Path,
    title: str = "Leaderboard",
    formats: Sequence[str] = FILE_FORMATS,
    figures: Sequence | None = None,
) -> list[Path]:
    """Write leaderboard.{md,csv,json,tex,html} (the formats asked for) into `out`; return the paths.

    LeaderboardRows also get statistics.json (comparisons, ranking, win rates, bootstrap settings).
    `figures` are (caption, PNG bytes) pairs to embed in the HTML page.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    renderers = {
        "md": lambda: to_markdown(rows, title),
        "csv": lambda: to_csv(rows),
        "json": lambda: to_json(rows),
        "tex": lambda: to_latex(rows, title),
        "html": lambda: _html(rows, title, figures),
    }
    written = []
    for suffix in formats:
        path = out / f"leaderboard.{suffix}"
        path.write_text(renderers[suffix]())
        written.append(path)
    if hasattr(rows, "comparisons"):
        path = out / "statistics.json"
        path.write_text(json.dumps(statistics_record(rows), indent=2, allow_nan=False) + "\n")
        written.append(path)
    return written


def _html(rows: Sequence[dict], title: str, figures: Sequence | None) -> str:
    from benchsuite.html_report import to_html

    return to_html(rows, title, figures=figures)
