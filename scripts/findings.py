"""Print the figures a published leaderboard's handwritten reading quotes.

A findings section (the text above `<!-- findings -->` in leaderboards/*/README.md) cites the top
and bottom of the table with intervals, who beats SGD, who is worse than random, interpolation
rates, how the ranking moves between architectures and what the run cost. Every one of those
numbers is in the folder's statistics.json, leaderboard.json and environment.json; this prints
them in one place so the reading quotes the files, not a memory of them.

    python scripts/findings.py leaderboards/zoo-fashion-mnist-lenet
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path


def pp(x: float) -> str:
    return f"{x:+.1f}"


def interval(row: dict, key: str, value: str | None = None) -> str:
    return f"{pp(row[value or key])} [{pp(row[key + '_ci_low'])}, {pp(row[key + '_ci_high'])}]"


def report(folder: Path) -> list[str]:
    statistics = json.loads((folder / "statistics.json").read_text())
    rows = json.loads((folder / "leaderboard.json").read_text())
    cost = json.loads((folder / "environment.json").read_text()).get("cost")  # absent before the zoo
    aggregate = statistics.get("aggregate") or {"optimizers": []}  # absent with one task
    reference = aggregate.get("reference_optimizer") or "sgd"
    lines = [f"# {folder.name}: {len(rows):,} rows", f"## across tasks, by IQM gain (P(> {reference}) where given)"]
    table = sorted(aggregate["optimizers"], key=lambda o: -o["gain_iqm"])
    for place, o in enumerate(table, 1):
        better = o.get("prob_improvement")
        versus = "" if better is None else f"  P>{reference} {better:.2f} [{o['prob_improvement_ci_low']:.2f}, {o['prob_improvement_ci_high']:.2f}]"
        lines.append(
            f"{place:3d} {o['optimizer']:20s} IQM {interval(o, 'gain_iqm')}  mean {pp(o['gain_mean'])}  "
            + (f"fit {100 * o['fit_share']:.0f}% ({o['networks_fit']}/{o['networks_trained']})  " if "fit_share" in o else "")
            + f"tasks >0 {o.get('tasks_above_zero', '?')} <0 {o.get('tasks_below_zero', '?')}{versus}"
        )
    lines.append("## mean rank over tasks")
    lines += [f"    {r['optimizer']:20s} {r['mean_rank']:.1f}  first on {r['first_places']}" for r in statistics["ranking"]]
    split = statistics.get("by_architecture")
    if split:
        for architecture in split["architectures"]:
            lines.append(f"## {architecture}")
            ranked = sorted(split["optimizers"], key=lambda o: o["by_architecture"][architecture]["rank"])
            for o in ranked:
                cell = o["by_architecture"][architecture]
                lines.append(f"    {int(cell['rank']):2d} {o['optimizer']:20s} {interval(cell, 'gain_iqm')}")
        lines += [f"spearman {' vs '.join(c['architectures'])}: {c['spearman']:.2f}" for c in split["rank_correlations"]]
    lines.append("## rows whose gain interval reaches zero")
    for r in rows:
        if r["gain_pp"] is not None and r["gain_ci_low"] is not None and r["gain_ci_low"] <= 0:
            lines.append(f"    {r['class_names']} N={r['n_train']} {r['architecture']} {r['optimizer']} {interval(r, 'gain', 'gain_pp')}")
    lines.append("## rows short of their networks (exhausted)")
    lines += [f"    {r['class_names']} N={r['n_train']} {r['architecture']} {r['optimizer']}: {r['models']}" for r in rows if r["exhausted"]]
    lines.append("## interpolation rate per architecture (networks that fit / trained; diverged)")
    fits: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for r in rows:
        if r["role"] != "baseline":
            tally = fits[(r["architecture"], r["optimizer"])]
            tally[0] += r["models"]
            tally[1] += r["candidates"] or 0
            tally[2] += r.get("diverged_networks") or 0  # absent from older folders
    for architecture in sorted({a for a, _ in fits}):
        shares = sorted(((n / max(t, 1), o, d) for (a, o), (n, t, d) in fits.items() if a == architecture), reverse=True)
        lines.append(f"    {architecture}: " + ", ".join(f"{o} {100 * s:.0f}% ({d} diverged)" for s, o, d in shares))
    lines.append("## the baseline's test accuracy, per architecture and N, across tasks")
    accuracy: dict[tuple[str, int], list[float]] = defaultdict(list)
    for r in rows:
        if r["role"] == "baseline":
            accuracy[(r["architecture"], r["n_train"])].append(100 * r["test_acc_mean"])
    lines += [f"    {a} N={n}: {min(v):.1f}-{max(v):.1f}%" for (a, n), v in sorted(accuracy.items())]
    if cost is None:
        return lines
    hours = lambda seconds: f"{seconds / 3600:.2f} h"  # noqa: E731
    lines.append(
        f"cost: {hours(cost['total_seconds'])} in all; training {hours(cost['optimizer_seconds'])} "
        f"({cost['networks_trained']:,} networks), tuning {hours(cost.get('tuning_seconds') or 0)} "
        f"({cost.get('tuning_trials') or 0:,} trials), G&C {hours(cost['baseline_seconds'])} "
        f"({cost['baseline_candidates']:,} candidates)"
    )
    return lines


if __name__ == "__main__":
    if len(sys.argv) != 2 or not (Path(sys.argv[1]) / "statistics.json").is_file():
        print(f"{' '.join(sys.argv[1:]) or 'no folder'}: not a published leaderboard (no statistics.json); "
              "usage: python scripts/findings.py LEADERBOARD_FOLDER", file=sys.stderr)
        sys.exit(2)
    print("\n".join(report(Path(sys.argv[1]))))
