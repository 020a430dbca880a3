"""The leaderboard as one self-contained HTML page: open it from disk, mail it, publish it.

Everything is inline (CSS, a small sorting script, figures as base64 PNG, interval plots as SVG),
so the page needs no network and no server. It shows the leaderboard with intervals, the
cross-task aggregate (mean and IQM gains, performance profiles), ranking and win rates, the paired comparisons, the figures it is given (PNG bytes, e.g.
benchsuite.plots.figures_from_store), and the environment and resolved suite of every run it came from.

Sorting: click a column header (again to reverse). A URL hash `#sort=TABLE.COLUMN[.asc|.desc]`
sorts on load by clicking that header, e.g. `leaderboard.html#sort=leaderboard.gain_pp.desc`.
Filtering by task, architecture and N, and a paired comparison of any two methods: html_explore.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from typing import Any

from benchsuite.reporting import html_explore
from benchsuite.reporting.display import (
    aggregate_notes,
    architecture_entries,
    architecture_notes,
    clear_tasks,
    ended,
    method_notes,
    metric_names,
    metric_note,
    ranks_shown,
    single_task_note,
)
from benchsuite.reporting.formatting import metric_interval, p_value, percent, signed, significant, task_label

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1400px; padding: 0 1em; color: #1b1b1b; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
.meta { color: #555; } .notes li { color: #444; margin: .2em 0; }
table { border-collapse: collapse; margin: .8em 0; font-variant-numeric: tabular-nums; }
th, td { padding: .25em .6em; border-bottom: 1px solid #eee; text-align: right; white-space: nowrap; }
th { background: #f4f4f4; position: sticky; top: 0; }
th.sortable { cursor: pointer; user-select: none; } th.sortable:hover { background: #e8e8ff; }
th[aria-sort=ascending]::after { content: " ▲"; } th[aria-sort=descending]::after { content: " ▼"; }
td.text, th.text { text-align: left; }
.scroll { overflow-x: auto; max-width: 100%; }
tr.baseline td { color: #666; font-style: italic; }
.ci { color: #777; font-size: .85em; } .up { color: #0a7a2a; } .down { color: #b00020; }
figure { display: inline-block; margin: .5em 1em .5em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: .9em; } pre { background: #f7f7f7; padding: 1em; overflow: auto; }
details { margin: .6em 0; } summary { cursor: pointer; font-weight: 600; }
"""

SCRIPT = """
(function () {
  function cellValue(row, index) {
    var cell = row.cells[index];
    if (!cell) return null;
    var raw = cell.getAttribute('data-value');
    if (raw === null) return cell.textContent.trim();
    if (raw === '') return null;
    var number = Number(raw);
    return isNaN(number) ? raw : number;
  }
  function sortTable(table, index, direction) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.forEach(function (row, position) { row._position = position; });
    rows.sort(function (a, b) {
      var x = cellValue(a, index), y = cellValue(b, index);
      if (x === null && y === null) return a._position - b._position;
      if (x === null) return 1;
      if (y === null) return -1;
      var order = (typeof x === 'number' && typeof y === 'number') ? x - y : String(x).localeCompare(String(y));
      return (direction === 'descending' ? -order : order) || a._position - b._position;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, i) {
      if (i === index) th.setAttribute('aria-sort', direction); else th.removeAttribute('aria-sort');
    });
    table.setAttribute('data-sorted-by', table.tHead.rows[0].cells[index].getAttribute('data-key') + '.' + direction);
  }
  document.querySelectorAll('table.sortable').forEach(function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, index) {
      th.classList.add('sortable');
      th.title = 'click to sort';
      th.addEventListener('click', function () {
        var current = th.getAttribute('aria-sort');
        var numeric = th.getAttribute('data-type') === 'number';
        var next = current ? (current === 'ascending' ? 'descending' : 'ascending') : (numeric ? 'descending' : 'ascending');
        sortTable(table, index, next);
      });
    });
  });
  var match = /sort=([\\w-]+)\\.([\\w-]+)(?:\\.(asc|desc))?/.exec(decodeURIComponent(location.hash));
  if (match) {
    var table = document.getElementById(match[1]);
    var header = table && table.querySelector('th[data-key="' + match[2] + '"]');
    if (header) {
      header.click();
      var wanted = match[3] === 'asc' ? 'ascending' : match[3] === 'desc' ? 'descending' : null;
      if (wanted && header.getAttribute('aria-sort') !== wanted) header.click();
    }
  }
})();
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _number_cell(value: float | None, text: str, extra: str = "", css: str = "") -> str:
    data = "" if value is None else repr(float(value))
    cls = f' class="{css}"' if css else ""
    return f'<td data-value="{data}"{cls}>{text}{extra}</td>'


def _ci(low: float | None, high: float | None, scale: float, signed: bool) -> str:
    if low is None or high is None:
        return ""
    form = "{:+.1f}" if signed else "{:.1f}"
    return f' <span class="ci">[{form.format(scale * low)}, {form.format(scale * high)}]</span>'


def _header(columns: Sequence[tuple[str, str, str]]) -> str:
    """columns: (key, label, type) with type 'text' or 'number'."""
    cells = "".join(
        f'<th data-key="{key}" data-type="{kind}"{" class=text" if kind == "text" else ""}>{_e(label)}</th>'
        for key, label, kind in columns
    )
    return f"<thead><tr>{cells}</tr></thead>"


# ---------------------------------------------------------------------------------------------
# Tables

LEADERBOARD_COLUMNS = (
    ("task", "task", "text"), ("n_train", "N", "number"), ("architecture", "architecture", "text"),
    ("optimizer", "method", "text"), ("test_acc_mean", "test acc %", "number"),
    ("test_acc_std", "± std", "number"), ("gain_pp", "gain pp", "number"),
    ("interval", "gain interval", "number"), ("prob_improvement", "P(better)", "number"),
    ("p_value", "p", "number"), ("p_value_holm", "p (Holm)", "number"),
    ("neg_log2_p_fit", "−log2 P(fit)", "number"), ("models", "networks", "number"),
    ("candidates", "candidates", "number"), ("seconds", "seconds", "number"),
    ("tied_fit_share", "tied fits %", "number"), ("tied_test_share", "tied test %", "number"),
)  # fmt: skip


def _gain_span(rows: Sequence[dict]) -> tuple[float, float]:
    values = [0.0]
    for row in rows:
        values += [
            v
            for v in (row.get("gain_ci_low"), row.get("gain_ci_high"), row.get("gain_pp"))
            if v is not None
        ]
    low, high = min(values), max(values)
    pad = 0.05 * (high - low or 1)
    return low - pad, high + pad


def _interval_svg(row: dict, span: tuple[float, float], width: int = 140, height: int = 14) -> str:
    """A tiny forest plot: the gain's interval as a bar, its estimate as a dot, zero as a line."""
    if row.get("gain_pp") is None:
        return ""
    low, high = span

    def x(value: float) -> float:
        return round(2 + (width - 4) * (value - low) / (high - low), 1)

    parts = [
        f'<line x1="{x(0)}" y1="0" x2="{x(0)}" y2="{height}" stroke="#999" stroke-dasharray="2,2"/>'
    ]
    if row.get("gain_ci_low") is not None:
        parts.append(
            f'<line x1="{x(row["gain_ci_low"])}" y1="{height / 2}" x2="{x(row["gain_ci_high"])}" '
            f'y2="{height / 2}" stroke="#3b6fb6" stroke-width="3"/>'
        )
    parts.append(f'<circle cx="{x(row["gain_pp"])}" cy="{height / 2}" r="3" fill="#1b1b1b"/>')
    label = f"gain {row['gain_pp']:+.1f} pp"
    return f'<svg width="{width}" height="{height}" role="img" aria-label="{label}">{"".join(parts)}</svg>'


def leaderboard_table(rows: Sequence[dict]) -> str:
    span = _gain_span(rows)
    body = []
    for row in rows:
        gain = row["gain_pp"]
        tone = (
            ""
            if gain is None
            else "up"
            if (row.get("gain_ci_low") or gain) > 0
            else "down"
            if (row.get("gain_ci_high") or gain) < 0
            else ""
        )
        method = (
            _e(row["optimizer"])
            + (" (baseline)" if row["role"] == "baseline" else "")
            + (" (unreliable)" if row.get("unreliable") else "")
            + _e(ended(row))
        )
        found = f"{row['models']}" + (
            "" if row["models"] >= row["models_requested"] else f"/{row['models_requested']}"
        )
        cells = [
            f'<td class="text">{_e(task_label(row))}</td>',
            _number_cell(row["n_train"], str(row["n_train"])),
            f'<td class="text">{_e(row["architecture"])}</td>',
            f'<td class="text">{method}</td>',
            _number_cell(row["test_acc_mean"], percent(row["test_acc_mean"]), _ci(row.get("test_acc_ci_low"), row.get("test_acc_ci_high"), 100, False)),
            _number_cell(row["test_acc_std"], percent(row["test_acc_std"])),
            _number_cell(gain, signed(gain), _ci(row.get("gain_ci_low"), row.get("gain_ci_high"), 1, True), tone),
            _number_cell(row.get("gain_ci_low"), _interval_svg(row, span)),
            _number_cell(row.get("prob_improvement"), "—" if row.get("prob_improvement") is None else f"{row['prob_improvement']:.2f}"),
            _number_cell(row.get("p_value"), p_value(row.get("p_value"))),
            _number_cell(row.get("p_value_holm"), p_value(row.get("p_value_holm"))),
            _number_cell(row["neg_log2_p_fit"], "—" if row["neg_log2_p_fit"] is None else f"{row['neg_log2_p_fit']:.2f}"),
            _number_cell(row["models"], found),
            _number_cell(row["candidates"], "—" if row["candidates"] is None else f"{row['candidates']:,}"),
            _number_cell(row["seconds"], f"{row['seconds']:.1f}"),
            _number_cell(row.get("tied_fit_share"), percent(row.get("tied_fit_share"))),
            _number_cell(row.get("tied_test_share"), percent(row.get("tied_test_share"))),
        ]  # fmt: skip
        css = ' class="baseline"' if row["role"] == "baseline" else ""
        body.append(f"<tr{css}{html_explore.row_attributes(row)}>{''.join(cells)}</tr>")
    return (
        f'<div class="scroll"><table id="leaderboard" class="sortable filterable">{_header(LEADERBOARD_COLUMNS)}'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def diagnostics_table(rows: Sequence[dict]) -> str:
    """The metrics' means with intervals, one line per row that has them; sortable."""
    names = metric_names(rows)
    columns = [("task", "task", "text"), ("n_train", "N", "number"), ("architecture", "architecture", "text"),
               ("optimizer", "method", "text"), *((f"metric{i}", name, "number") for i, name in enumerate(names))]  # fmt: skip
    body = []
    for row in rows:
        if not row.get("metrics"):
            continue
        method = _e(row["optimizer"]) + (" (baseline)" if row["role"] == "baseline" else "")
        cells = [
            f'<td class="text">{_e(task_label(row))}</td>', _number_cell(row["n_train"], str(row["n_train"])),
            f'<td class="text">{_e(row["architecture"])}</td>', f'<td class="text">{method}</td>',
        ]  # fmt: skip
        for name in names:
            summary = row["metrics"].get(name) or {}
            interval = metric_interval(summary.get("ci_low"), summary.get("ci_high"))
            extra = f' <span class="ci">{_e(interval)}</span>' if interval else ""
            cells.append(_number_cell(summary.get("mean"), _e(significant(summary.get("mean"))), extra))
        css = ' class="baseline"' if row["role"] == "baseline" else ""
        body.append(f"<tr{css}>{''.join(cells)}</tr>")
    return (
        f'<div class="scroll"><table id="diagnostics" class="sortable">{_header(columns)}'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


COMPARISON_COLUMNS = (
    ("task", "task", "text"), ("n_train", "N", "number"), ("architecture", "architecture", "text"),
    ("optimizer_a", "A", "text"), ("optimizer_b", "B", "text"), ("training_sets", "sets", "number"),
    ("difference_pp", "A − B pp", "number"), ("prob_improvement", "P(A > B)", "number"),
    ("p_value", "p", "number"), ("p_value_holm", "p (Holm)", "number"),
)  # fmt: skip


def comparisons_table(comparisons: Sequence[dict]) -> str:
    body = []
    for c in comparisons:
        cells = [
            f'<td class="text">{_e(task_label(c))}</td>',
            _number_cell(c["n_train"], str(c["n_train"])),
            f'<td class="text">{_e(c["architecture"])}</td>',
            f'<td class="text">{_e(c["optimizer_a"])}</td>',
            f'<td class="text">{_e(c["optimizer_b"])}</td>',
            _number_cell(c["training_sets"], str(c["training_sets"])),
            _number_cell(c["difference_pp"], signed(c["difference_pp"]), _ci(c["difference_ci_low"], c["difference_ci_high"], 1, True)),
            _number_cell(c["prob_improvement"], "—" if c["prob_improvement"] is None else f"{c['prob_improvement']:.2f}"),
            _number_cell(c["p_value"], p_value(c["p_value"])),
            _number_cell(c.get("p_value_holm"), p_value(c.get("p_value_holm"))),
        ]  # fmt: skip
        body.append(f"<tr{html_explore.row_attributes(c)}>{''.join(cells)}</tr>")
    return f'<div class="scroll"><table id="comparisons" class="sortable filterable">{_header(COMPARISON_COLUMNS)}<tbody>{"".join(body)}</tbody></table></div>'


def ranking_table(ranking: Sequence[dict]) -> str:
    columns = (
        ("optimizer", "method", "text"),
        ("mean_rank", "mean rank", "number"),
        ("tasks", "tasks", "number"),
        ("first_places", "first places", "number"),
    )
    body = "".join(
        f'<tr><td class="text">{_e(r["optimizer"])}</td>{_number_cell(r["mean_rank"], format(r["mean_rank"], ".2f"))}'
        f"{_number_cell(r['tasks'], str(r['tasks']))}{_number_cell(r['first_places'], str(r['first_places']))}</tr>"
        for r in ranking
    )
    return f'<table id="ranking" class="sortable">{_header(columns)}<tbody>{body}</tbody></table>'


def aggregate_table(aggregate: dict) -> str:
    """The across-task table (benchsuite.aggregate): best IQM first, every column sortable."""
    reference = aggregate.get("reference_optimizer")
    taus = aggregate["profile_taus"]
    columns = [
        ("optimizer", "method", "text"), ("tasks", "tasks", "number"), ("tasks_above_zero", "tasks > 0 / < 0", "number"),
        ("fit_share", "fit %", "number"),
        ("gain_mean", "mean gain pp", "number"), ("gain_iqm", "IQM gain pp", "number"),
    ]  # fmt: skip
    if reference is not None:
        columns.append(("prob_improvement", f"P(> {reference})", "number"))
    columns += [(f"profile_{tau:g}", f"profile τ={tau:g}", "number") for tau in taus]
    columns += [
        ("profile_area", f"profile area (τ ≤ {aggregate['profile_tau_max']:g})", "number"),
        ("profile_tau_all", "τ for all tasks", "number"),
    ]
    body = []
    for e in aggregate["optimizers"]:
        cells = [
            f'<td class="text">{_e(e["optimizer"])}</td>',
            _number_cell(e["tasks"], str(e["tasks"])),
            _number_cell(e.get("tasks_above_zero"), clear_tasks(e)),
            _number_cell(e.get("fit_share"), percent(e.get("fit_share"))),
            _number_cell(e["gain_mean"], signed(e["gain_mean"]), _ci(e["gain_mean_ci_low"], e["gain_mean_ci_high"], 1, True)),
            _number_cell(e["gain_iqm"], signed(e["gain_iqm"]), _ci(e["gain_iqm_ci_low"], e["gain_iqm_ci_high"], 1, True)),
        ]  # fmt: skip
        if reference is not None:
            low, high = e["prob_improvement_ci_low"], e["prob_improvement_ci_high"]
            extra = "" if low is None else f' <span class="ci">[{low:.2f}, {high:.2f}]</span>'
            cells.append(_number_cell(e["prob_improvement"], _fixed(e["prob_improvement"], 2), extra))
        for value in e.get("profile") or [None] * len(taus):
            cells.append(_number_cell(value, _fixed(value, 2)))
        cells.append(_number_cell(e.get("profile_area"), _fixed(e.get("profile_area"), 2)))
        cells.append(_number_cell(e.get("profile_tau_all"), _fixed(e.get("profile_tau_all"), 1)))
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f'<div class="scroll"><table id="aggregate" class="sortable">{_header(columns)}<tbody>{"".join(body)}</tbody></table></div>'


def architecture_table(record: dict, aggregate: dict | None) -> str:
    """aggregate.by_architecture: per architecture each optimizer's IQM gain and rank, in the
    across-task table's order, every column sortable."""
    columns = [("optimizer", "method", "text")]
    for i, architecture in enumerate(record["architectures"]):
        columns.append((f"iqm_{i}", f"{architecture}: IQM gain pp", "number"))
        if ranks_shown(record):
            columns.append((f"rank_{i}", f"{architecture}: rank", "number"))
    body = []
    for e in architecture_entries(record, aggregate):
        cells = [f'<td class="text">{_e(e["optimizer"])}</td>']
        for architecture in record["architectures"]:
            found = e["by_architecture"].get(architecture)
            if found is None:
                cells += [_number_cell(None, "—")] * (2 if ranks_shown(record) else 1)
                continue
            ci = _ci(found["gain_iqm_ci_low"], found["gain_iqm_ci_high"], 1, True)
            cells.append(_number_cell(found["gain_iqm"], signed(found["gain_iqm"]), ci))
            if ranks_shown(record):
                cells.append(_number_cell(found["rank"], f"{found['rank']:g}"))
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f'<div class="scroll"><table id="by-architecture" class="sortable">{_header(columns)}<tbody>{"".join(body)}</tbody></table></div>'


def _fixed(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def win_rate_table(win_rates: dict) -> str:
    labels = win_rates["optimizers"]
    head = "".join(f"<th>{_e(b)}</th>" for b in labels)
    body = []
    for a, line in zip(labels, win_rates["matrix"]):
        cells = []
        for value in line:
            if value is None:
                cells.append("<td>—</td>")
            else:
                shade = (
                    f"rgba(10,122,42,{0.08 + 0.5 * value:.2f})"
                    if value >= 0.5
                    else f"rgba(176,0,32,{0.08 + 0.5 * (1 - value):.2f})"
                )
                cells.append(f'<td style="background:{shade}">{value:.2f}</td>')
        body.append(f'<tr><th class="text">{_e(a)}</th>{"".join(cells)}</tr>')
    return f'<table id="win-rates"><thead><tr><th class="text">row beats column</th>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


# ---------------------------------------------------------------------------------------------
# Provenance: environment and suite


def environment_section(runs: Sequence[dict]) -> str:
    if not runs:
        return "<p>No run records.</p>"
    parts = []
    for run in runs:
        env = run.get("environment") or {}
        facts = [
            ("run", run.get("run_id")), ("source", run.get("source")), ("command", run.get("command")),
            ("started", run.get("started_at")), ("finished", run.get("finished_at")),
            ("device", f"{env['device']} ({env.get('device_name', '')})" if "device" in env else None),
            ("merged from", env.get("merged_from")),
            ("python", env.get("python")), ("platform", env.get("platform")),
            ("cuda", env.get("cuda")), ("git commit", env.get("git_commit")),
        ]  # fmt: skip
        rows = "".join(
            f'<tr><th class="text">{_e(k)}</th><td class="text">{_e(v)}</td></tr>'
            for k, v in facts
            if v not in (None, "")
        )
        packages = env.get("packages") or {}
        package_rows = "".join(
            f'<tr><td class="text">{_e(k)}</td><td class="text">{_e(v)}</td></tr>'
            for k, v in sorted(packages.items())
        )
        plugins = env.get("plugins") or []
        plugin_rows = "".join(
            f'<tr><td class="text">{_e(p.get("name"))}</td><td class="text">{_e(p.get("distribution"))}</td>'
            f'<td class="text">{_e(p.get("version"))}</td><td class="text">{_e(p.get("status"))}</td></tr>'
            for p in plugins
        )
        parts.append(
            f'<details class="run" open><summary>run {_e(run.get("run_id"))}: {_e(env.get("device_name") or env.get("device") or ("merge" if "merged_from" in env else ""))}</summary>'
            f"<table>{rows}</table>"
            f'<table><thead><tr><th class="text">package</th><th class="text">version</th></tr></thead><tbody>{package_rows}</tbody></table>'
            + (
                f'<table><thead><tr><th class="text">plugin</th><th class="text">distribution</th><th class="text">version</th>'
                f'<th class="text">status</th></tr></thead><tbody>{plugin_rows}</tbody></table>'
                if plugins else ""
            )
            + "</details>"
        )  # fmt: skip
    return "".join(parts)


def suite_section(runs: Sequence[dict]) -> str:
    suites = {}
    for run in runs:
        suites.setdefault(run.get("suite_id"), run.get("suite"))
    return "".join(
        f"<details><summary>suite {_e(suite_id)}</summary><pre>{_e(json.dumps(suite, indent=2, sort_keys=True))}</pre></details>"
        for suite_id, suite in suites.items()
    )


# ---------------------------------------------------------------------------------------------
# Figures


SUMMARY_FIGURE = "summary"  # benchsuite.plots' figure of every optimizer's gain across tasks: shown first


def _figure(caption: str, png: bytes, element_id: str = "") -> str:
    ident = f' id="{element_id}"' if element_id else ""
    return (
        f'<figure{ident}><img alt="{_e(caption)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


def summary_figure(figures: Sequence[tuple[str, bytes]] | None) -> str:
    """The summary figure, at the top of the page (many optimizers: plots.figures makes one)."""
    return "".join(_figure(c, png, "summary-figure") for c, png in figures or () if c == SUMMARY_FIGURE)


def figures_section(figures: Sequence[tuple[str, bytes]] | None) -> str:
    rest = [(c, png) for c, png in figures or () if c != SUMMARY_FIGURE]
    if not rest:
        return ""
    items = "".join(_figure(caption, png) for caption, png in rest)
    return f'<h2 id="figures-heading">Figures</h2><div id="figures">{items}</div>'


# ---------------------------------------------------------------------------------------------
# The page


def to_html(
    rows: Sequence[dict],
    title: str = "Leaderboard",
    figures: Sequence[tuple[str, bytes]] | None = None,
    runs: Sequence[dict] | None = None,
) -> str:
    """The whole page as one string; `runs` defaults to the runs LeaderboardRows carries."""
    runs = list(runs if runs is not None else getattr(rows, "runs", []))
    suite = runs[-1]["suite"] if runs else {}
    suite_ids = sorted({str(r.get("suite_id")) for r in runs})
    description = suite.get("description", "")
    tasks = {(r["dataset"], tuple(r["classes"]), r["n_train"], r["architecture"]) for r in rows}
    networks = sum(r["models"] for r in rows)
    meta = (
        f'<p class="meta">suite <b>{_e(suite.get("name", "?"))}</b> (id {_e(", ".join(suite_ids) or "?")}); '
        f"{len(tasks)} tasks, {len(rows)} rows, {networks:,} interpolating networks; {len(runs)} run(s).</p>"
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{STYLE}{html_explore.STYLE}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        meta,
        f"<p>{_e(description)}</p>" if description else "",
        (
            "<p>Do the interpolating networks an optimizer finds generalize better than random interpolators "
            "(networks drawn from the prior that fit the same training set)? Test accuracy is the mean over "
            "training sets of each set's mean; the gain is in percentage points over the baseline on the same "
            "training sets. Click a column header to sort.</p>"
        ),
        summary_figure(figures),
        '<h2 id="leaderboard-heading">Leaderboard</h2>',
        html_explore.explorer_section(rows, getattr(rows, "set_means", None)) if rows else "",
        leaderboard_table(rows) if rows else "<p>(no finished cells)</p>",
        '<ul class="notes">' + "".join(f"<li>{_e(n)}</li>" for n in method_notes(rows)) + "</ul>",
    ]
    if metric_names(rows):
        parts += ['<h2 id="diagnostics-heading">Diagnostics</h2>', f"<p>{_e(metric_note(rows))}</p>", diagnostics_table(rows)]
    ranking = getattr(rows, "ranking", None)
    aggregate = getattr(rows, "aggregate", None)
    if ranking and len(tasks) > 1:
        parts.append('<h2 id="ranking-heading">Across tasks</h2>')
        if aggregate and aggregate["optimizers"]:
            parts += [
                "<p>Gain over the baseline and performance profile, aggregated over tasks (best IQM first):</p>",
                aggregate_table(aggregate),
                '<ul class="notes">' + "".join(f"<li>{_e(n)}</li>" for n in aggregate_notes(aggregate)) + "</ul>",
            ]
        by_architecture = getattr(rows, "by_architecture", None)
        if by_architecture:
            parts += [
                "<p>By architecture: the gain over the baseline on each architecture's tasks, and how the ranking moves:</p>",
                architecture_table(by_architecture, aggregate),
                '<ul class="notes">' + "".join(f"<li>{_e(n)}</li>" for n in architecture_notes(by_architecture)) + "</ul>",
            ]
        parts += [
            "<p>Rank by mean test accuracy on each task (1 = best), averaged over the tasks each method ran.</p>",
            ranking_table(ranking),
            "<p>Win rate: share of the tasks both ran on which the row's method has the higher mean test accuracy (ties half).</p>",
            win_rate_table(rows.win_rates),
        ]
    elif ranking:
        parts.append(f"<p>{_e(single_task_note())}</p>")
    comparisons = getattr(rows, "comparisons", None)
    if comparisons:
        parts += [
            '<h2 id="comparisons-heading">Paired comparisons</h2>',
            (
                "<p>Every pair of methods within a task, on the training sets both have: difference of means with its "
                "paired bootstrap interval, probability of improvement, sign-flip p-value, and Holm's correction "
                "across all comparisons in this table.</p>"
            ),
            comparisons_table(comparisons),
        ]
    parts += [
        figures_section(figures),
        '<h2 id="environment-heading">Environment</h2>',
        environment_section(runs),
        '<h2 id="suite-heading">Resolved suite</h2>',
        suite_section(runs),
        f"<script>{SCRIPT}</script>",
        f"<script>{html_explore.SCRIPT}</script>",
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"
