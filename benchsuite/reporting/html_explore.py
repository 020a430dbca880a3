"""The HTML page's explorer: filter the tables by task, architecture and N, and compare any two
methods with a paired test, in the browser, without a server.

Why in the browser: with 25+ optimizers the leaderboard has thousands of rows and the paired
comparisons tens of thousands; a reader wants the few that matter to them, and a pair of methods
over the tasks they choose. The page carries each training set's mean test accuracy per method
(LeaderboardRows.set_means), so the comparison is computed from the same units as the
leaderboard's own tests: per-training-set differences, a two-sided sign-flip test (exact up to
16 units, like benchsuite.statistics.sign_flip_test; Monte Carlo beyond, with a fixed seed).

A URL hash sets the controls on load, e.g. `#task=digits%200%20vs%201&n=8&a=sgd&b=adam`.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence

from benchsuite.reporting.formatting import task_label

EXACT_LIMIT = 16  # benchsuite.statistics.EXACT_SIGN_FLIP_LIMIT (not imported: another layer's)
MONTE_CARLO_DRAWS = 20000

STYLE = """
#explorer { background: #f7f8fc; border: 1px solid #dde; padding: .6em 1em; margin: .8em 0; }
#explorer label { margin-right: 1.2em; } #explorer select { margin-left: .3em; }
#compare-result { margin-top: .5em; } #filter-count { color: #555; }
"""

SCRIPT = """
(function () {
  var source = document.getElementById('board-data');
  if (!source) return;
  var data = JSON.parse(source.textContent);
  var controls = ['task', 'architecture', 'n'];
  function value(id) { var el = document.getElementById(id); return el ? el.value : 'all'; }
  function matches(task, architecture, n) {
    return (value('filter-task') === 'all' || value('filter-task') === task) &&
      (value('filter-architecture') === 'all' || value('filter-architecture') === architecture) &&
      (value('filter-n') === 'all' || value('filter-n') === String(n));
  }
  function applyFilters() {
    var shown = 0, total = 0;
    document.querySelectorAll('table.filterable').forEach(function (table) {
      Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
        var keep = matches(row.getAttribute('data-task'), row.getAttribute('data-architecture'), row.getAttribute('data-n'));
        row.hidden = !keep;
        if (table.id === 'leaderboard') { total += 1; shown += keep ? 1 : 0; }
      });
    });
    var count = document.getElementById('filter-count');
    if (count) count.textContent = shown + ' of ' + total + ' leaderboard rows shown';
    compare();
  }
  function mulberry32(seed) {
    return function () {
      seed |= 0; seed = seed + 0x6D2B79F5 | 0;
      var t = Math.imul(seed ^ seed >>> 15, 1 | seed);
      t = t + Math.imul(t ^ t >>> 7, 61 | t) ^ t;
      return ((t ^ t >>> 14) >>> 0) / 4294967296;
    };
  }
  function signFlip(d) {
    var n = d.length, observed = 0, scale = 0, hits = 0, i, k;
    for (i = 0; i < n; i++) { observed += d[i]; scale += Math.abs(d[i]); }
    observed = Math.abs(observed);
    var tolerance = 1e-12 * Math.max(1, scale);
    if (n <= data.exact_limit) {
      for (var mask = 0; mask < (1 << n); mask++) {
        var sum = 0;
        for (k = 0; k < n; k++) sum += (mask >> k & 1) ? -d[k] : d[k];
        if (Math.abs(sum) >= observed - tolerance) hits += 1;
      }
      return {p: hits / (1 << n), method: 'exact sign-flip'};
    }
    var random = mulberry32(12345);
    for (i = 0; i < data.draws; i++) {
      var total = 0;
      for (k = 0; k < n; k++) total += random() < 0.5 ? -d[k] : d[k];
      if (Math.abs(total) >= observed - tolerance) hits += 1;
    }
    return {p: (1 + hits) / (1 + data.draws), method: 'Monte Carlo sign-flip (' + data.draws + ' draws, fixed seed)'};
  }
  function compare() {
    var out = document.getElementById('compare-result');
    var a = value('compare-a'), b = value('compare-b');
    if (!out) return;
    if (a === b) { out.textContent = 'Choose two different methods.'; out.removeAttribute('data-units'); return; }
    var differences = [], groups = 0;
    data.groups.forEach(function (g) {
      if (!matches(g.task, g.architecture, g.n)) return;
      var x = g.means[a], y = g.means[b];
      if (!x || !y) return;
      var shared = Object.keys(x).filter(function (s) { return s in y; }).sort();
      if (shared.length) groups += 1;
      shared.forEach(function (s) { differences.push(x[s] - y[s]); });
    });
    out.setAttribute('data-units', differences.length);
    if (!differences.length) { out.textContent = a + ' and ' + b + ' share no training set under these filters.'; return; }
    var mean = differences.reduce(function (s, v) { return s + v; }, 0) / differences.length;
    var wins = differences.filter(function (v) { return v > 0; }).length;
    var losses = differences.filter(function (v) { return v < 0; }).length;
    var test = signFlip(differences);
    out.setAttribute('data-difference', mean);
    out.setAttribute('data-p', test.p);
    out.textContent = a + ' \u2212 ' + b + ': ' + (mean >= 0 ? '+' : '') + (100 * mean).toFixed(2) +
      ' pp mean test-accuracy difference over ' + differences.length + ' training sets in ' + groups +
      ' tasks (' + a + ' higher on ' + wins + ', lower on ' + losses + '); ' + test.method + ' p = ' +
      (test.p < 0.001 ? test.p.toExponential(1) : test.p.toFixed(3)) +
      '. Training sets of one pair at several N are nested, so across N they are not independent.';
  }
  controls.forEach(function (name) {
    var el = document.getElementById('filter-' + name);
    if (el) el.addEventListener('change', applyFilters);
  });
  ['compare-a', 'compare-b'].forEach(function (id) {
    var el = document.getElementById(id);
    if (el) el.addEventListener('change', compare);
  });
  var hash = decodeURIComponent(location.hash.replace(/^#/, ''));
  hash.split('&').forEach(function (part) {
    var pair = part.split('='), key = pair[0], wanted = pair.slice(1).join('=');
    var id = {task: 'filter-task', architecture: 'filter-architecture', n: 'filter-n', a: 'compare-a', b: 'compare-b'}[key];
    var el = id && document.getElementById(id);
    if (el && Array.prototype.some.call(el.options, function (o) { return o.value === wanted; })) el.value = wanted;
  });
  applyFilters();
})();
"""


def _e(value) -> str:
    return html.escape("" if value is None else str(value))


def _select(element_id: str, label: str, options: Sequence[str], include_all: bool = True, chosen: str | None = None) -> str:
    values = (["all"] if include_all else []) + list(options)
    items = "".join(
        f'<option value="{_e(v)}"{" selected" if v == chosen else ""}>{_e(v)}</option>' for v in values
    )
    return f'<label>{_e(label)}<select id="{element_id}">{items}</select></label>'


def row_attributes(row: dict) -> str:
    """The data attributes a filterable table row carries (leaderboard and comparisons rows)."""
    return f' data-task="{_e(task_label(row))}" data-architecture="{_e(row["architecture"])}" data-n="{_e(row["n_train"])}"'


def board_data(set_means: Sequence[dict]) -> dict:
    """What the script reads: per (task, N, architecture), each method's per-training-set means."""
    groups: dict[tuple, dict] = {}
    for unit in set_means:
        key = (task_label(unit), unit["n_train"], unit["architecture"])
        group = groups.setdefault(key, {"task": key[0], "n": key[1], "architecture": key[2], "means": {}})
        group["means"][unit["optimizer"]] = dict(unit["means"])
    return {"exact_limit": EXACT_LIMIT, "draws": MONTE_CARLO_DRAWS, "groups": list(groups.values())}


def _json_for_script(value) -> str:
    """JSON that cannot close its <script> element, whatever the labels hold."""
    return json.dumps(value, sort_keys=True).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def explorer_section(rows: Sequence[dict], set_means: Sequence[dict] | None) -> str:
    """The filter bar and the pairwise comparison, above the leaderboard."""
    tasks = sorted({task_label(r) for r in rows})
    architectures = sorted({r["architecture"] for r in rows})
    sizes = [str(n) for n in sorted({r["n_train"] for r in rows})]
    methods = list(dict.fromkeys(r["optimizer"] for r in sorted(rows, key=lambda r: (r["role"] == "baseline", r["optimizer"]))))
    parts = [
        '<div id="explorer">',
        "<div><b>Filter</b> ",
        _select("filter-task", "task", tasks),
        _select("filter-architecture", "architecture", architectures),
        _select("filter-n", "N", sizes),
        ' <span id="filter-count"></span></div>',
    ]
    if set_means and len(methods) > 1:
        parts += [
            "<div><b>Compare</b> ",
            _select("compare-a", "A", methods, include_all=False, chosen=methods[0]),
            _select("compare-b", "B", methods, include_all=False, chosen=methods[1]),
            " <span class=\"meta\">(paired over the training sets both ran, within the filters)</span></div>",
            '<div id="compare-result"></div>',
        ]
    parts.append(f'<script type="application/json" id="board-data">{_json_for_script(board_data(set_means or []))}</script>')
    parts.append("</div>")
    return "".join(parts)
