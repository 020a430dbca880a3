"""The HTML leaderboard page: self-contained, complete, and what a person sees in a real browser.

The browser tests drive Debian's headless Chromium: --dump-dom after the page's own script has
sorted a table (the URL hash clicks a header, exercising the click handler), and --screenshot.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from stored_results import ENVIRONMENT, make_results

from benchsuite.leaderboard import leaderboard_from_store
from benchsuite.plots import figures_from_store
from benchsuite.reporting.html_page import to_html
from benchsuite.store import Store

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (Debian package chromium)"
)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


class Tables(HTMLParser):
    """Collects every table's header keys, header attributes and body cell texts."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, dict] = {}
        self.current = None
        self.cell = None
        self.in_body = False
        self.images: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name in ("src", "href"):
            if attrs.get(name, "").startswith(("http:", "https:", "//")):
                self.external.append(attrs[name])
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        if tag == "table":
            self.current = self.tables.setdefault(
                attrs.get("id", f"table{len(self.tables)}"),
                {"headers": [], "rows": [], "attrs": attrs},
            )
        elif tag == "tbody":
            self.in_body = True
        elif tag == "th" and self.current is not None and not self.in_body:
            self.current["headers"].append(attrs)
        elif tag == "tr" and self.in_body and self.current is not None:
            self.current["rows"].append([])
        elif tag == "td" and self.in_body and self.current is not None:
            self.cell = []

    def handle_endtag(self, tag):
        if tag == "td" and self.cell is not None:
            self.current["rows"][-1].append("".join(self.cell).strip())
            self.cell = None
        elif tag == "tbody":
            self.in_body = False
        elif tag == "table":
            self.current = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def parse(page: str) -> Tables:
    parser = Tables()
    parser.feed(page)
    return parser


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    folder = make_results(tmp_path_factory.mktemp("html") / "out", pairs=((0, 1),), models=10)
    with Store(folder / "results.sqlite") as store:
        rows = leaderboard_from_store(store)
        figures = figures_from_store(store)
    page = folder / "leaderboard.html"
    page.write_text(to_html(rows, "Leaderboard: fixture", figures=figures))
    return page, rows, figures


def test_page_is_self_contained_and_complete(board):
    page, rows, figures = board
    text = page.read_text()
    parsed = parse(text)
    assert parsed.external == [] and "<link" not in text and "@import" not in text
    leaderboard = parsed.tables["leaderboard"]
    assert len(leaderboard["rows"]) == len(rows) == 12
    assert [h["data-key"] for h in leaderboard["headers"]][:8] == [
        "task",
        "n_train",
        "architecture",
        "optimizer",
        "test_acc_mean",
        "test_acc_std",
        "gain_pp",
        "interval",
    ]
    assert len(parsed.tables["comparisons"]["rows"]) == len(rows.comparisons) == 12
    assert len(parsed.tables["ranking"]["rows"]) == 3
    aggregate = parsed.tables["aggregate"]
    assert [cells[0] for cells in aggregate["rows"]] == [e["optimizer"] for e in rows.aggregate["optimizers"]]
    first = rows.aggregate["optimizers"][0]
    assert aggregate["rows"][0][2] == f"{first['tasks_above_zero']} / {first['tasks_below_zero']}"
    assert aggregate["rows"][0][3] == f"{100 * first['fit_share']:.1f}"  # the interpolation rate
    assert aggregate["rows"][0][5] == f"{first['gain_iqm']:+.1f} [{first['gain_iqm_ci_low']:+.1f}, {first['gain_iqm_ci_high']:+.1f}]"
    assert "profile_1" in [h["data-key"] for h in aggregate["headers"]] and "sortable" in aggregate["attrs"]["class"]
    assert "win-rates" in parsed.tables
    # provenance: environment and suite of the run
    assert (
        ENVIRONMENT["git_commit"] in text
        and "torch" in text
        and ENVIRONMENT["packages"]["torch"] in text
    )
    assert (
        "benchsuite.builtins" in text
        and "suite0000fixture" in text
        and "&quot;training_set_seeds&quot;" in text
    )
    # every figure embedded as a PNG data URI (figures need matplotlib and benchsuite.plots)
    assert len(parsed.images) == len(figures)
    assert all(src.startswith("data:image/png;base64,") for src in parsed.images)


def test_figures_are_embedded_when_plots_are_available(board):
    pytest.importorskip("matplotlib")
    pytest.importorskip("benchsuite.plots")
    _, _, figures = board
    assert figures and all(png.startswith(b"\x89PNG") for _, png in figures)


def test_numbers_on_the_page_are_the_rows(board):
    page, rows, _ = board
    leaderboard = parse(page.read_text()).tables["leaderboard"]
    for cells, row in zip(leaderboard["rows"], rows):
        assert cells[3].startswith(row["optimizer"])
        assert cells[4].startswith(
            f"{100 * row['test_acc_mean']:.1f} [{100 * row['test_acc_ci_low']:.1f}, {100 * row['test_acc_ci_high']:.1f}]"
        )
        if row["gain_pp"] is not None:
            assert (
                cells[6]
                == f"{row['gain_pp']:+.1f} [{row['gain_ci_low']:+.1f}, {row['gain_ci_high']:+.1f}]"
            )


def chromium(
    page: Path, tmp_path: Path, *arguments: str, fragment: str = ""
) -> subprocess.CompletedProcess:
    profile = tmp_path / "profile"
    command = [
        CHROMIUM,
        *FLAGS,
        f"--user-data-dir={profile}",
        *arguments,
        page.resolve().as_uri() + fragment,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)


@needs_chromium
def test_browser_sorts_by_a_clicked_header(board, tmp_path):
    page, rows, _ = board
    result = chromium(page, tmp_path, "--dump-dom", fragment="#sort=leaderboard.gain_pp.desc")
    assert result.returncode == 0, result.stderr[-2000:]
    dom = parse(result.stdout)
    leaderboard = dom.tables["leaderboard"]
    assert leaderboard["attrs"].get("data-sorted-by") == "gain_pp.descending"
    gain_header = next(h for h in leaderboard["headers"] if h["data-key"] == "gain_pp")
    assert gain_header.get("aria-sort") == "descending"
    expected = sorted((r for r in rows if r["gain_pp"] is not None), key=lambda r: -r["gain_pp"])
    shown = leaderboard["rows"]
    assert len(shown) == len(rows)
    for cells, row in zip(shown, expected):  # what a person sees, top to bottom
        assert (
            cells[3] == row["optimizer"]
            and cells[1] == str(row["n_train"])
            and cells[2] == row["architecture"]
        )
        assert cells[6].startswith(f"{row['gain_pp']:+.1f}")
    assert all(cells[6] == "—" for cells in shown[len(expected) :])  # baselines (no gain) last


@needs_chromium
def test_browser_sorts_text_columns_and_reverses(board, tmp_path):
    page, rows, _ = board
    result = chromium(page, tmp_path, "--dump-dom", fragment="#sort=ranking.mean_rank.desc")
    assert result.returncode == 0, result.stderr[-2000:]
    ranking = parse(result.stdout).tables["ranking"]["rows"]
    assert [cells[0] for cells in ranking] == [r["optimizer"] for r in reversed(rows.ranking)]
    result = chromium(page, tmp_path, "--dump-dom", fragment="#sort=comparisons.optimizer_a.asc")
    labels = [cells[3] for cells in parse(result.stdout).tables["comparisons"]["rows"]]
    assert labels == sorted(labels)


@needs_chromium
def test_browser_screenshot(board, tmp_path):
    page, _, _ = board
    shot = tmp_path / "leaderboard.png"
    result = chromium(
        page, tmp_path, f"--screenshot={shot}", "--window-size=1400,1800", "--hide-scrollbars"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 30_000
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1400, 1800)
    image = pytest.importorskip("matplotlib.image").imread(shot)
    assert image[..., :3].std() > 0.05  # text and tables, not a blank page
    # the leaderboard sits above the fold: rows of dark text in the top third
    assert (image[: height // 3, :, :3].mean(axis=2) < 0.4).sum() > 5000


@needs_chromium
def test_browser_sorts_the_by_architecture_table(board, tmp_path):
    page, rows, _ = board
    result = chromium(page, tmp_path, "--dump-dom", fragment="#sort=by-architecture.iqm_1.asc")
    assert result.returncode == 0, result.stderr[-2000:]
    table = parse(result.stdout).tables["by-architecture"]
    assert table["attrs"].get("data-sorted-by") == "iqm_1.ascending"
    record = rows.by_architecture
    narrow = record["architectures"][1]
    expected = sorted(record["optimizers"], key=lambda e: e["by_architecture"][narrow]["gain_iqm"])
    assert [cells[0] for cells in table["rows"]] == [e["optimizer"] for e in expected]
    for cells, e in zip(table["rows"], expected):
        assert cells[3].startswith(f"{e['by_architecture'][narrow]['gain_iqm']:+.1f}")
        assert cells[4] == f"{e['by_architecture'][narrow]['rank']:g}"
