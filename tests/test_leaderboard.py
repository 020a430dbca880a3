"""The leaderboard's text formats: what a person reads (terminal, Markdown, LaTeX) and what a program
reads (CSV, JSON), all from one database written through Store, and the `leaderboard` command."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
from cli_runner import cli
from rich.console import Console
from stored_results import make_results

from benchsuite.leaderboard import build_rows, leaderboard_from_store
from benchsuite.reporting.csv_table import CSV_COLUMNS, to_csv
from benchsuite.reporting.files import write_leaderboard
from benchsuite.reporting.json_rows import to_json
from benchsuite.reporting.latex import latex_escape, to_latex
from benchsuite.reporting.markdown import to_markdown
from benchsuite.reporting.terminal import to_terminal
from benchsuite.store import Store

CONTRACT = ("dataset", "classes", "n_train", "architecture", "optimizer", "test_acc_mean", "test_acc_std", "models",
            "gain_pp", "neg_log2_p_fit", "candidates", "seconds")  # fmt: skip
ADDED = ("test_acc_ci_low", "test_acc_ci_high", "gain_ci_low", "gain_ci_high", "p_value", "p_value_holm",
         "prob_improvement", "baseline_percentile", "bootstrap_seed", "bootstrap_resamples", "confidence")  # fmt: skip


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_results(tmp_path_factory.mktemp("board") / "out", seeds=(200, 201), models=10)


@pytest.fixture(scope="module")
def rows(folder):
    with Store(folder / "results.sqlite") as store:
        return leaderboard_from_store(store)


def test_json_keeps_the_contract_and_adds_statistics(rows):
    records = json.loads(to_json(rows))
    assert isinstance(records, list) and len(records) == 24
    for record in records:
        for key in CONTRACT + ADDED:
            assert key in record, key
        assert 0 <= record["test_acc_mean"] <= 1 and 0 <= record["test_acc_std"] <= 1
        assert (
            0
            <= record["test_acc_ci_low"]
            <= record["test_acc_mean"]
            <= record["test_acc_ci_high"]
            <= 1
        )
        if record["role"] == "baseline":
            assert (
                record["gain_pp"] is None
                and record["gain_ci_low"] is None
                and record["candidates"] >= record["models"]
            )
            assert record["neg_log2_p_fit"] > 0
        else:
            assert record["gain_ci_low"] <= record["gain_pp"] <= record["gain_ci_high"]
            assert record["baseline_percentile"] == pytest.approx(100 * record["prob_improvement"])


def test_build_rows_without_statistics_arguments_still_works(folder):
    with Store(folder / "results.sqlite") as store:
        plain = build_rows(store.cells(), store.network_rows(), "gnc")
    assert len(plain) == 24 and all("test_acc_ci_low" in r for r in plain)


def test_csv_has_every_column_and_parses(rows):
    parsed = list(csv.DictReader(io.StringIO(to_csv(rows))))
    assert len(parsed) == 24
    assert list(parsed[0]) == list(CSV_COLUMNS)
    first = next(p for p in parsed if p["role"] == "optimizer")
    assert float(first["gain_ci_low"]) <= float(first["gain_pp"]) <= float(first["gain_ci_high"])
    assert first["classes"] in ("0 vs 1", "3 vs 8")


def test_markdown_shows_intervals_gain_ranks_and_comparisons(rows):
    text = to_markdown(rows, "Leaderboard: fixture")
    table = [line for line in text.splitlines() if line.startswith("| digits")]
    assert len(table) == 24 + 24  # leaderboard rows, then one comparison per pair and task
    header = next(line for line in text.splitlines() if line.startswith("| task"))
    assert "test acc % [95% CI]" in header and "gain pp [95% CI]" in header and "p (Holm)" in header
    sgd = next(r for r in rows if r["optimizer"] == "sgd")
    line = next(
        l for l in table if "| sgd |" in l and f"| {sgd['n_train']} | {sgd['architecture']} |" in l
    )
    assert (
        f"{100 * sgd['test_acc_mean']:.1f} [{100 * sgd['test_acc_ci_low']:.1f}, {100 * sgd['test_acc_ci_high']:.1f}]"
        in line
    )
    assert f"{sgd['gain_pp']:+.1f} [{sgd['gain_ci_low']:+.1f}, {sgd['gain_ci_high']:+.1f}]" in line
    assert "## Across tasks" in text and "## Paired comparisons" in text
    assert "smallest possible p: 0.5 with 2 training sets" in text
    assert "seed 0" in text and "2000 resamples" in text


def test_terminal_table_shows_intervals(rows):
    console = Console(record=True, width=250)
    to_terminal(rows, console, title="Leaderboard: fixture")
    text = console.export_text()
    assert "Leaderboard: fixture" in text and "gain pp" in text and "[a, b]: 95% CI" in text
    sgd = next(r for r in rows if r["optimizer"] == "sgd")
    assert f"{sgd['gain_pp']:+.1f} [{sgd['gain_ci_low']:+.1f}, {sgd['gain_ci_high']:+.1f}]" in text
    assert "Across tasks" in text and "mean rank" in text


def test_terminal_keeps_intervals_on_a_narrow_terminal_and_says_what_it_hid(rows):
    console = Console(record=True, width=80, force_terminal=True)
    to_terminal(rows, console)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    sgd = next(r for r in rows if r["optimizer"] == "sgd")
    assert f"{sgd['gain_pp']:+.1f} [{sgd['gain_ci_low']:+.1f}, {sgd['gain_ci_high']:+.1f}]" in text
    assert "Hidden at this width:" in text and "mlp" in text


def test_terminal_renders_plain_rows_too(rows):
    """The runner may hand over a plain list: no comparisons, no ranking, still intervals."""
    console = Console(record=True, width=250)
    to_terminal(list(rows), console)
    assert "[a, b]: 95% CI" in console.export_text()
    assert "Paired comparisons" not in to_markdown(list(rows))


def test_latex_is_a_booktabs_table_with_one_line_per_row(rows):
    text = to_latex(rows, "Leaderboard: a_b & c")
    assert "\\toprule" in text and "\\midrule" in text and "\\bottomrule" in text
    assert "\\caption{Leaderboard: a\\_b \\& c}" in text
    body = [l for l in text.splitlines() if l.startswith("digits")]
    assert len(body) == 24
    columns = text.split("\\begin{tabular}{")[1].split("}")[0]
    assert all(line.count(" & ") == len(columns) - 1 and line.endswith("\\\\") for line in body)
    assert "\\textit{gnc}" in text and "%" not in "".join(body).replace("\\%", "")
    assert text.count("\\midrule") == 1 + 7  # after the header, then between the 8 tasks


def test_latex_escape():
    assert (
        latex_escape("50% of $x_1 & {y}#~^\\")
        == r"50\% of \$x\_1 \& \{y\}\#\textasciitilde{}\textasciicircum{}\textbackslash{}"
    )


def test_write_leaderboard_writes_every_format(rows, tmp_path):
    written = write_leaderboard(rows, tmp_path, title="t")
    names = sorted(p.name for p in written)
    assert names == sorted(
        [
            "leaderboard.md",
            "leaderboard.csv",
            "leaderboard.json",
            "leaderboard.tex",
            "leaderboard.html",
            "statistics.json",
        ]
    )
    record = json.loads((tmp_path / "statistics.json").read_text())
    assert record["bootstrap"]["seed"] == 0 and record["bootstrap"]["resamples"] == 2000
    assert len(record["comparisons"]) == 24 and record["ranking"][0]["optimizer"] == "sgd"
    only = write_leaderboard(list(rows), tmp_path / "plain", formats=("md", "json"))
    assert sorted(p.name for p in only) == ["leaderboard.json", "leaderboard.md"]


def test_leaderboard_command_prints_latex_and_html(folder, rows, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "results.sqlite").write_bytes((folder / "results.sqlite").read_bytes())
    result = cli("leaderboard", str(copy), "--format", "latex", "--format", "html")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("% generated by benchsuite") and "\\bottomrule" in result.stdout
    assert "<!DOCTYPE html>" in result.stdout and 'id="leaderboard"' in result.stdout
    for name in (
        "leaderboard.md",
        "leaderboard.csv",
        "leaderboard.tex",
        "leaderboard.html",
        "statistics.json",
    ):
        assert (copy / name).is_file()
    # the same database gives the same file, bit for bit: the bootstrap seed is fixed
    assert (copy / "leaderboard.json").read_text() == to_json(rows)


def test_leaderboard_command_on_a_missing_folder_is_one_line(tmp_path):
    result = cli("leaderboard", str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and re.search(
        r"no results database", result.stderr
    )


def test_exhausted_cells_without_networks_render_everywhere(tmp_path):
    """A baseline that found nothing (budget spent) has no mean, no interval and no gains to pair."""
    from benchsuite.reporting.html_page import to_html

    folder = make_results(tmp_path / "out", pairs=((0, 1),), n_trains=(4,), widths=("1",), seeds=(200, 201), models=5)
    with Store(folder / "results.sqlite") as store:
        cell = dict(store.cells()[0])
        cell.update(cell_id="empty-cell", optimizer="gnc-kaiming", optimizer_name="gnc", role="baseline", exhausted=1, candidates_tried=10**6)
        cell.pop("models_found"), cell.pop("finished_at")
        store.add_cell(cell, [])
        rows = leaderboard_from_store(store)
    empty = next(r for r in rows if r["optimizer"] == "gnc-kaiming")
    assert empty["test_acc_mean"] is None and empty["test_acc_ci_low"] is None and empty["neg_log2_p_fit"] is None
    assert empty["exhausted"] and empty["models"] == 0
    json.loads(to_json(rows))
    assert "gnc-kaiming" in to_markdown(rows) and "gnc-kaiming" in to_latex(rows) and "gnc-kaiming" in to_html(rows)
    console = Console(record=True, width=200)
    to_terminal(rows, console)
    assert "0/5" in console.export_text()


def test_every_format_shows_the_across_task_aggregate_best_iqm_first(rows, tmp_path):
    record = rows.aggregate
    assert [e["optimizer"] for e in record["optimizers"]] == sorted(
        ("adam", "sgd"), key=lambda o: -next(e["gain_iqm"] for e in record["optimizers"] if e["optimizer"] == o)
    )
    first = record["optimizers"][0]
    mean = f"{first['gain_mean']:+.1f} [{first['gain_mean_ci_low']:+.1f}, {first['gain_mean_ci_high']:+.1f}]"
    iqm = f"{first['gain_iqm']:+.1f} [{first['gain_iqm_ci_low']:+.1f}, {first['gain_iqm_ci_high']:+.1f}]"
    text = to_markdown(rows)
    header = next(line for line in text.splitlines() if "IQM gain pp [95% CI]" in line)
    lines = text.splitlines()
    table = lines[lines.index(header) + 2 : lines.index(header) + 2 + len(record["optimizers"])]
    assert [line.split(" | ")[0].strip("| ") for line in table] == [e["optimizer"] for e in record["optimizers"]]
    assert mean in table[0] and iqm in table[0] and "P(&gt; sgd)" in header and "profile τ=1" in header
    assert "stratified percentile bootstrap" in text and "Dolan and Moré" in text
    assert text.index("IQM gain pp") < text.index("mean rank")  # the aggregate leads the section
    console = Console(record=True, width=250)
    to_terminal(rows, console)
    shown = console.export_text()
    assert "IQM gain pp" in shown and "profile τ=1" in shown and mean in shown and iqm in shown
    write_leaderboard(rows, tmp_path, formats=("json",))
    stored = json.loads((tmp_path / "statistics.json").read_text())["aggregate"]
    assert stored["optimizers"][0] == first and stored["reference_optimizer"] == "sgd"


def test_one_task_or_one_training_set_per_task_is_said_not_shown_as_intervals(tmp_path):
    from benchsuite.reporting.display import single_task_note
    from benchsuite.reporting.html_page import to_html

    one_task = make_results(tmp_path / "one-task", pairs=((0, 1),), n_trains=(4,), widths=("1",), seeds=(200, 201), models=5)
    with Store(one_task / "results.sqlite") as store:
        rows = leaderboard_from_store(store)
    assert single_task_note() in to_markdown(rows) and "IQM gain" not in to_markdown(rows)
    assert single_task_note() in to_html(rows) and 'id="aggregate"' not in to_html(rows)
    console = Console(record=True, width=250)
    to_terminal(rows, console)
    assert "one task only" in console.export_text() and "IQM gain" not in console.export_text()

    one_set = make_results(tmp_path / "one-set", pairs=((0, 1),), widths=("1",), seeds=(200,), models=5)
    with Store(one_set / "results.sqlite") as store:
        rows = leaderboard_from_store(store)
    assert rows.aggregate["tasks"] == 2
    assert all(e["gain_mean_ci_low"] is None and e["gain_iqm"] is not None for e in rows.aggregate["optimizers"])
    text = to_markdown(rows)
    assert "One training set per task: the stratified bootstrap has nothing to resample" in text
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if "IQM gain pp" in line)
    assert all("[" not in line for line in lines[header + 2 : header + 4])  # no degenerate intervals
    console = Console(record=True, width=250)
    to_terminal(rows, console)
    assert "one training set per task: no intervals" in console.export_text()


def test_every_format_shows_how_the_ranking_moves_with_the_architecture(rows, tmp_path):
    from benchsuite.reporting.html_page import to_html

    record = rows.by_architecture
    assert record["architectures"] == ["mlp w=1 d=4", "mlp w=1/6 d=4"]
    order = [e["optimizer"] for e in rows.aggregate["optimizers"]]
    text = to_markdown(rows)
    lines = text.splitlines()
    header = lines.index(next(line for line in lines if "mlp w=1 d=4: IQM gain pp [95% CI]" in line))
    table = lines[header + 2 : header + 2 + len(order)]
    assert [line.split(" | ")[0].strip("| ") for line in table] == order  # the across-task table's order
    for line, label in zip(table, order):
        for arch in record["architectures"]:
            found = next(e for e in record["optimizers"] if e["optimizer"] == label)["by_architecture"][arch]
            shown = f"{found['gain_iqm']:+.1f} [{found['gain_iqm_ci_low']:+.1f}, {found['gain_iqm_ci_high']:+.1f}] | {found['rank']:g}"
            assert shown in line
    assert "Rank correlation (Spearman)" not in text  # two optimizers: no rho
    assert text.index("| IQM gain pp [95% CI] |") < text.index(lines[header]) < text.index("mean rank")
    page = to_html(rows)
    assert 'id="by-architecture"' in page and page.index('id="aggregate"') < page.index('id="by-architecture"')
    first = record["optimizers"][0]["by_architecture"]["mlp w=1 d=4"]
    assert f'data-value="{first["gain_iqm"]!r}"' in page
    write_leaderboard(rows, tmp_path, formats=("json",))
    assert json.loads((tmp_path / "statistics.json").read_text())["by_architecture"] == record
    console = Console(record=True, width=250)
    to_terminal(rows, console)
    shown = console.export_text()
    assert "By architecture: IQM gain over gnc" in shown
    for e in record["optimizers"]:  # one cell per architecture: gain, interval and rank
        found = e["by_architecture"]["mlp w=1 d=4"]
        assert f"{found['gain_iqm']:+.1f} [{found['gain_iqm_ci_low']:+.1f}, {found['gain_iqm_ci_high']:+.1f}] #{found['rank']:g}" in shown


def test_by_architecture_ranks_and_correlates_only_where_that_means_something(tmp_path):
    from benchsuite.reporting.html_page import to_html

    alone = make_results(tmp_path / "alone", optimizers=("sgd", "gnc"), seeds=(200, 201), models=5)
    with Store(alone / "results.sqlite") as store:
        rows = leaderboard_from_store(store)
    text = to_markdown(rows)
    assert "| mlp w=1 d=4: IQM gain pp [95% CI] | mlp w=1/6 d=4: IQM gain pp [95% CI] |" in text  # one optimizer: no ranks
    assert ": rank" not in text and "Rank correlation" not in text and ": rank" not in to_html(rows)

    several = make_results(tmp_path / "several", optimizers=("sgd", "adam", "lion", "radam", "gnc"), seeds=(200, 201), models=5)
    with Store(several / "results.sqlite") as store:
        rows = leaderboard_from_store(store)
    (pair,) = rows.by_architecture["rank_correlations"]
    sentence = f"Rank correlation (Spearman) of the IQM gains between architectures: mlp w=1 d=4 and mlp w=1/6 d=4 {pair['spearman']:.2f} (4 optimizers)."
    assert sentence in to_markdown(rows) and sentence in to_html(rows)
