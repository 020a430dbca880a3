"""`benchsuite explain`: the cells' gains and metrics recomputed from the database by hand, their
rank correlation by scipy, and the command in every format."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from collections import defaultdict
from statistics import fmean

import pytest
from cli_runner import cli
from stored_results import make_results

from benchsuite.explain import explain

scipy_stats = pytest.importorskip("scipy.stats")


def planted(optimizer, n_train, test_acc, k):
    """`tracks` follows a network's accuracy (so a cell's mean tracks its gain); `width_only` is
    the same for every network; `init` is undefined for the baseline."""
    return {
        "tracks": 3.0 * test_acc + 0.001 * k,
        "width_only": 1.0,
        "init": float("nan") if optimizer == "gnc" else 0.1 * n_train + 0.01 * k,
    }


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_results(tmp_path_factory.mktemp("explain") / "out", seeds=(200, 201, 202), models=5, metrics=planted)


def by_hand(folder, metric, relative=False):
    """(metric, gain) per optimizer cell, from SQL and Python alone."""
    db = sqlite3.connect(folder / "results.sqlite")
    cells = db.execute(
        "SELECT cell_id, dataset, classes, n_train, architecture, training_set_seed, optimizer, role FROM cells"
    ).fetchall()
    accuracy, values = defaultdict(list), defaultdict(list)
    for cell_id, acc in db.execute("SELECT cell_id, test_acc FROM networks"):
        accuracy[cell_id].append(acc)
    for cell_id, value in db.execute("SELECT cell_id, value FROM network_metrics WHERE metric = ?", (metric,)):
        if value is not None:
            values[cell_id].append(value)
    baseline = {tuple(c[1:6]): c[0] for c in cells if c[7] == "baseline"}
    pairs = []
    for c in cells:
        if c[7] == "baseline":
            continue
        reference = baseline[tuple(c[1:6])]
        gain = 100 * (fmean(accuracy[c[0]]) - fmean(accuracy[reference]))
        if relative:
            if not values[reference]:
                continue
            pairs.append((fmean(values[c[0]]) - fmean(values[reference]), gain))
        else:
            pairs.append((fmean(values[c[0]]), gain))
    return pairs


def test_rho_equals_scipy_on_the_cells_recomputed_by_hand(folder):
    explanation = explain(folder)
    rows = {r["metric"]: r for r in explanation.rows}
    assert explanation.cells == 2 * 2 * 2 * 2 * 3  # pairs x N x widths x optimizers x training sets
    for metric in ("tracks", "init"):
        pairs = by_hand(folder, metric)
        expected = scipy_stats.spearmanr([p[0] for p in pairs], [p[1] for p in pairs]).statistic
        assert rows[metric]["cells"] == len(pairs) and rows[metric]["rho"] == pytest.approx(expected, abs=1e-12)
        assert rows[metric]["rho_ci_low"] <= rows[metric]["rho"] <= rows[metric]["rho_ci_high"]
    relative = by_hand(folder, "tracks", relative=True)
    expected = scipy_stats.spearmanr([p[0] for p in relative], [p[1] for p in relative]).statistic
    assert rows["tracks"]["relative_rho"] == pytest.approx(expected, abs=1e-12)
    # the planted relation is found, with an interval above zero; a constant metric has no rho
    assert rows["tracks"]["rho"] > 0.3 and rows["tracks"]["rho_ci_low"] > 0
    assert rows["tracks"]["relative_rho"] > 0.9  # 3 x (accuracy - baseline's) is the gain, up to ties
    assert rows["width_only"]["rho"] is None and rows["width_only"]["rho_ci_low"] is None
    # the baseline has no `init`: no relative correlation, and every cell left out of it
    assert rows["init"]["relative_cells"] == 0 and rows["init"]["relative_rho"] is None
    assert [r["metric"] for r in explanation.rows] == ["tracks", "init", "width_only"]  # by |rho|


def test_the_same_database_gives_the_same_intervals(folder):
    assert explain(folder).rows == explain(folder).rows


def test_explain_command_in_every_format(folder):
    terminal = cli("explain", str(folder))
    assert terminal.returncode == 0, terminal.stderr
    assert "tracks" in terminal.stdout and "Spearman" in terminal.stdout
    markdown = cli("explain", str(folder), "--format", "md")
    assert markdown.stdout.startswith("# Which diagnostic") and "| mlp | tracks |" in markdown.stdout
    record = json.loads(cli("explain", str(folder), "--format", "json", "--resamples", "500").stdout)
    assert record["bootstrap"]["resamples"] == 500 and record["baseline"] == "gnc"
    parsed = list(csv.DictReader(io.StringIO(cli("explain", str(folder), "--format", "csv").stdout)))
    assert {row["metric"] for row in parsed} == {"tracks", "init", "width_only"}


def test_explain_without_metrics_or_baseline_is_one_line(tmp_path):
    plain = make_results(tmp_path / "plain", pairs=((0, 1),), n_trains=(4,), seeds=(200,), models=3)
    result = cli("explain", str(plain))
    assert result.returncode == 2 and "no per-network metrics" in result.stderr
    measured = make_results(tmp_path / "m", pairs=((0, 1),), n_trains=(4,), seeds=(200,), models=3, metrics=planted)
    result = cli("explain", str(measured), "--baseline", "nope")
    assert result.returncode == 2 and "no baseline 'nope'" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_explain_loads_no_torch(folder):
    """A reading command: it answers without the training engine (a real process)."""
    import subprocess
    import sys

    script = (
        "import sys; from click.testing import CliRunner; from benchsuite.cli import main; "
        f"r = CliRunner().invoke(main, ['explain', {str(folder)!r}, '--format', 'json']); "
        "assert r.exit_code == 0, r.output; print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False"
