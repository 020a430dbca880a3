"""The HTML page's explorer in a real browser (headless Chromium, as tests/test_html.py drives it):
filtering by task, architecture and N hides exactly the other rows, and the comparison of any two
methods gives the paired difference and the sign-flip p-value that benchsuite.statistics gives."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import numpy as np
import pytest
from stored_results import make_results
from test_html import chromium, needs_chromium

from benchsuite.leaderboard import leaderboard_from_store
from benchsuite.reporting.formatting import task_label
from benchsuite.reporting.html_explore import explorer_section
from benchsuite.reporting.html_page import to_html
from benchsuite.statistics import sign_flip_test
from benchsuite.store import Store


class Page(HTMLParser):
    """Each filterable table's rows (attributes) and the comparison result's attributes and text."""

    def __init__(self):
        super().__init__()
        self.rows: dict[str, list[dict]] = {}
        self.table = None
        self.result: dict = {}
        self.in_result = False
        self.result_text: list[str] = []
        self.data = ""
        self.in_data = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self.table = attrs.get("id")
        elif tag == "tr" and self.table and "data-task" in attrs:
            self.rows.setdefault(self.table, []).append(attrs)
        elif attrs.get("id") == "compare-result":
            self.result, self.in_result = attrs, True
        elif attrs.get("id") == "board-data":
            self.in_data = True

    def handle_endtag(self, tag):
        if tag == "table":
            self.table = None
        if tag == "div":
            self.in_result = False
        if tag == "script":
            self.in_data = False

    def handle_data(self, data):
        if self.in_result:
            self.result_text.append(data)
        if self.in_data:
            self.data += data


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    return page


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    folder = make_results(tmp_path_factory.mktemp("explore") / "out", models=6)
    with Store(folder / "results.sqlite") as store:
        rows = leaderboard_from_store(store)
    page = folder / "leaderboard.html"
    page.write_text(to_html(rows, "Leaderboard: explorer fixture"))
    return page, rows


def differences(rows, a: str, b: str, task: str | None = None, n: int | None = None) -> list[float]:
    """Per-training-set differences a - b, in the page's order (groups as stored, seeds sorted)."""
    units: dict[tuple, dict] = {}
    for unit in rows.set_means:
        units.setdefault((task_label(unit), unit["n_train"], unit["architecture"]), {})[unit["optimizer"]] = unit["means"]
    found = []
    for (label, size, _), means in units.items():
        if (task and label != task) or (n and size != n) or a not in means or b not in means:
            continue
        found += [means[a][s] - means[b][s] for s in sorted(means[a]) if s in means[b]]
    return found


def test_rows_carry_their_task_and_the_page_carries_the_training_set_means(board):
    page, rows = board
    parsed = parse(page.read_text())
    leaderboard = parsed.rows["leaderboard"]
    assert [(r["data-task"], r["data-n"], r["data-architecture"]) for r in leaderboard] == [
        (task_label(row), str(row["n_train"]), row["architecture"]) for row in rows
    ]
    assert len(parsed.rows["comparisons"]) == len(rows.comparisons)
    data = json.loads(parsed.data)
    assert data["exact_limit"] == 16 and len(data["groups"]) == 2 * 2 * 2  # pairs x N x widths
    assert all(set(g["means"]) == {"sgd", "adam", "gnc"} for g in data["groups"])


def test_labels_cannot_break_out_of_the_embedded_data():
    row = {"dataset": "d", "classes": [0, 1], "n_train": 4, "architecture": "mlp", "optimizer": "</script><b>x", "role": "optimizer"}
    unit = {**row, "means": {"200": 0.5}}
    section = explorer_section([row, {**row, "optimizer": "sgd"}], [unit, {**unit, "optimizer": "sgd"}])
    assert "</script><b>" not in section and section.count("</script>") == 1


@needs_chromium
def test_browser_filters_by_task_and_n_and_compares_two_methods(board, tmp_path):
    page, rows = board
    task = task_label({"dataset": "digits", "classes": [3, 8]})
    result = chromium(page, tmp_path, "--dump-dom", fragment=f"#task={task}&n=8&a=sgd&b=adam")
    assert result.returncode == 0, result.stderr[-2000:]
    parsed = parse(result.stdout)
    for table in ("leaderboard", "comparisons"):
        shown = [r for r in parsed.rows[table] if "hidden" not in r]
        assert shown and all(r["data-task"] == task and r["data-n"] == "8" for r in shown)
        hidden = [r for r in parsed.rows[table] if "hidden" in r]
        assert all(r["data-task"] != task or r["data-n"] != "8" for r in hidden)
    assert len([r for r in parsed.rows["leaderboard"] if "hidden" not in r]) == 2 * 3  # widths x methods
    expected = differences(rows, "sgd", "adam", task, 8)
    assert int(parsed.result["data-units"]) == len(expected) == 2 * 4  # widths x training sets
    assert float(parsed.result["data-difference"]) == pytest.approx(np.mean(expected), abs=1e-12)
    assert float(parsed.result["data-p"]) == pytest.approx(sign_flip_test(expected)[0], abs=1e-12)
    assert "exact sign-flip" in "".join(parsed.result_text)


@needs_chromium
def test_browser_compares_over_every_task_without_filters(board, tmp_path):
    page, rows = board
    result = chromium(page, tmp_path, "--dump-dom", fragment="#a=sgd&b=gnc")
    assert result.returncode == 0, result.stderr[-2000:]
    parsed = parse(result.stdout)
    assert not any("hidden" in r for r in parsed.rows["leaderboard"])
    expected = differences(rows, "sgd", "gnc")
    assert int(parsed.result["data-units"]) == len(expected) == 2 * 2 * 2 * 4
    assert float(parsed.result["data-difference"]) == pytest.approx(np.mean(expected), abs=1e-12)
    p = float(parsed.result["data-p"])
    assert 0 < p <= 1 and "Monte Carlo" in "".join(parsed.result_text)
    assert p == pytest.approx(sign_flip_test(expected)[0], abs=0.01)  # another stream, same test
