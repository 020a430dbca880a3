"""`benchsuite publish`: merge result folders of one resolved suite into a citable leaderboard folder.

A published folder is everything a reader needs to trust and reproduce a leaderboard: the merged
database, the leaderboard in every format, the resolved suite it ran, the environment of every run
(package versions, device, plugins, git commit), figures, and a README. Folders of different
resolved suites are refused: their cells are not the same experiment, so merging them would pair
numbers that are not comparable. A folder is its final suite's (its last run's); one whose suite
grew between runs is taken when every cell is a cell of the final suite (final_suite.py), so a
published folder always reproduces from its suite.yaml.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from benchsuite.errors import BenchsuiteError
from benchsuite.escaping import markdown_prose, markdown_text, one_line
from benchsuite.final_suite import SuiteVersions, suite_versions
from benchsuite.paths import default_out, shell_command
from benchsuite.reporting.formatting import duration
from benchsuite.resolved import runnable_document
from benchsuite.statistics import BootstrapSettings
from benchsuite.store import Store, database_of

GENERATED = (
    "results.sqlite", "leaderboard.md", "leaderboard.csv", "leaderboard.json", "leaderboard.tex",
    "leaderboard.html", "statistics.json", "suite.yaml", "suite.json", "environment.json", "README.md",
)  # fmt: skip


@dataclass
class Source:
    """One result folder: where its database is and which resolved suite its runs recorded."""

    folder: Path
    database: Path
    suite_id: str
    suite: dict[str, Any]
    versions: SuiteVersions | None = None


@dataclass
class Published:
    target: Path
    files: list[Path]
    cells: int
    duplicate_cells: int
    sources: list[Source] = field(default_factory=list)


def read_source(path: str | Path) -> Source:
    """A result folder and its suite id: the final suite's, the one its last run ran. A folder run
    under several versions of its suite (grown between runs) is taken when every
    cell is a cell of the final suite computed as it would be, and refused otherwise
    (final_suite.suite_versions): it must reproduce from the final suite.yaml."""
    database = database_of(path)
    with Store(database, read_only=True) as store:
        store.verify()
        runs = store.runs()
        origins = store.cell_origins()
    if not runs:
        raise BenchsuiteError(f"{path}: no runs recorded in {database.name}; nothing to publish")
    versions = suite_versions(path, runs, origins)
    return Source(database.parent, database, versions.final, runs[-1]["suite"], versions)


def check_compatible(sources: Sequence[Source]) -> None:
    """All sources must come from the same resolved suite (same suite id)."""
    first = sources[0]
    for other in sources[1:]:
        if other.suite_id != first.suite_id:
            raise BenchsuiteError(
                f"cannot merge {other.folder} (suite {other.suite.get('name')!r}, id {other.suite_id}) with "
                f"{first.folder} (suite {first.suite.get('name')!r}, id {first.suite_id}): different resolved "
                "suites; publish one suite at a time"
            )
    folders = [s.database.resolve() for s in sources]
    if len(set(folders)) != len(folders):
        raise BenchsuiteError("the same result folder is given twice")


def merge_databases(sources: Sequence[Source], database: Path) -> tuple[int, int]:
    """Copy runs, cells, networks and metrics into `database`; return (cells, duplicates skipped).

    Runs get new ids (cells follow them). A cell id present in an earlier source is kept from that
    source: cell ids hash the cell's identity and seed, so a repeat is the same experiment.
    """
    with Store(database) as store:
        duplicates = sum(store.merge(source.database) for source in sources)
        store.set_meta("published_from", json.dumps([str(s.folder) for s in sources]))
        return store.cell_count(), duplicates


def environment_record(
    runs: Sequence[dict], sources: Sequence[Source], settings: BootstrapSettings
) -> dict[str, Any]:
    """Every run's environment, and a summary of what differs between them."""
    packages: dict[str, set] = defaultdict(set)
    devices, commits, plugins = set(), set(), set()
    for run in runs:
        env = run["environment"]
        for name, version in (env.get("packages") or {}).items():
            packages[name].add(str(version))
        if "device" in env:  # a merge's run computed nothing (merging.py)
            devices.add(f"{env.get('device')} ({env.get('device_name')})")
        commits.add(str(env.get("git_commit")))
        for p in env.get("plugins") or []:
            plugins.add((p.get("name"), p.get("distribution"), p.get("version")))
    return {
        "suite_id": runs[-1]["suite_id"] if runs else None,
        "sources": [str(s.folder) for s in sources],
        "summary": {
            "packages": {name: sorted(v) for name, v in sorted(packages.items())},
            "devices": sorted(devices),
            "git_commits": sorted(commits),
            "plugins": [
                {"name": n, "distribution": d, "version": v} for n, d, v in sorted(plugins, key=str)
            ],
        },
        "statistics": settings.as_dict(),
        "runs": [
            {
                k: run.get(k)
                for k in (
                    "run_id",
                    "suite_id",
                    "command",
                    "started_at",
                    "finished_at",
                    "environment",
                )
            }
            for run in runs
        ],
    }


def cost_record(cells: Sequence[Mapping[str, Any]], trials: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What the published cells cost, as each cell and tuning trial timed itself on its worker:
    sums of worker time (a run on several workers took less wall time), split into the
    optimizers' training, the baselines' sampling and the tuning trials, with the networks trained
    and the candidates drawn beside them. Every figure is a sum over `cells` and `trials` rows."""
    optimizers = [c for c in cells if c["role"] == "optimizer"]
    baselines = [c for c in cells if c["role"] == "baseline"]
    record = {
        "optimizer_cells": len(optimizers),
        "optimizer_seconds": sum(c["seconds"] for c in optimizers),
        "networks_trained": sum(c["candidates_tried"] for c in optimizers),
        "baseline_cells": len(baselines),
        "baseline_seconds": sum(c["seconds"] for c in baselines),
        "baseline_candidates": sum(c["candidates_tried"] for c in baselines),
        "tuning_trials": len(trials),
        "tuning_seconds": sum(t["seconds"] for t in trials),
    }
    record["total_seconds"] = record["optimizer_seconds"] + record["baseline_seconds"] + record["tuning_seconds"]
    return record


def cost_line(cost: Mapping[str, Any]) -> str:
    """The README's one line on what the cells cost (cost_record)."""
    parts = []
    if cost["optimizer_cells"]:
        parts.append(f"{duration(cost['optimizer_seconds'])} training {cost['networks_trained']:,} networks in {cost['optimizer_cells']:,} optimizer cells")
    if cost["tuning_trials"]:
        parts.append(f"{duration(cost['tuning_seconds'])} in {cost['tuning_trials']:,} tuning trials")
    if cost["baseline_cells"]:
        parts.append(f"{duration(cost['baseline_seconds'])} drawing {cost['baseline_candidates']:,} candidates in {cost['baseline_cells']:,} baseline cells")
    return (
        f"- compute: {duration(cost['total_seconds'])} of worker time ({'; '.join(parts)}), as each cell and trial "
        "timed itself; runs on several workers took less wall time"
    )


def readme(
    name: str,
    target: Path,
    rows: Sequence[dict],
    runs: Sequence[dict],
    environment: dict,
    figures: Sequence[Path],
    duplicates: int,
    versions: SuiteVersions | None = None,
) -> str:
    """The published folder's front page: what it is, the headline numbers, how to reproduce."""
    from benchsuite.reporting.display import display_rows, method_notes, ranking_display
    from benchsuite.reporting.formatting import task_count
    from benchsuite.reporting.markdown import aggregate_lines, architecture_lines, markdown_table

    suite = runs[-1]["suite"]
    summary = environment["summary"]
    networks = sum(r["models"] for r in rows)
    lines = [
        f"# Leaderboard: {markdown_text(suite.get('name', name))}",
        "",
        markdown_prose((suite.get("description") or "").strip()),
        "",
        f"Resolved suite id `{markdown_text(environment['suite_id'])}`; {len(rows)} leaderboard rows, {networks:,} interpolating "
        f"networks, merged from {len(environment['sources'])} result folder(s) and {len(runs)} run(s)"
        + (
            f"; {duplicates} cell(s) found in more than one folder were taken from the first."
            if duplicates
            else "."
        ),
        "",
        *grown_note(versions),
        (
            "Each row: mean test accuracy of the interpolating networks an optimizer (or the random-interpolator "
            "baseline) found, with its bootstrap interval, and the gain over the baseline on the same training sets."
        ),
        "",
    ]
    ranking = getattr(rows, "ranking", None)
    if ranking:
        lines += ["## Across tasks", ""] + aggregate_lines(getattr(rows, "aggregate", None) if task_count(rows) > 1 else None)
        lines += architecture_lines(rows)
        lines += ["Rank by mean test accuracy on each task (1 = best), averaged over tasks.", ""]
        lines += markdown_table(ranking_display(ranking)) + [""]
    if rows:
        lines += ["## Leaderboard", ""] + markdown_table(display_rows(rows)) + [""]
        lines += [f"- {note}" for note in method_notes(rows)] + [""]
    lines += [
        "## Files",
        "",
        (
            "- `leaderboard.html`: the page to read (sortable tables, figures, environment, suite); "
            "`leaderboard.md`, `.csv`, `.json`, `.tex` (booktabs) hold the same rows."
        ),
        (
            "- `statistics.json`: paired comparisons of every pair of methods per task, mean ranks, win rates, the "
            "across-task aggregate (mean and IQM gains with intervals, P(> SGD), performance profiles, interpolation "
            "rates; per architecture where there are several) and the bootstrap settings."
        ),
        (
            "- `results.sqlite`: every interpolating network (tables runs, cells, networks, network_metrics; view "
            "network_rows). Every number above is a function of it: `benchsuite leaderboard .` rebuilds them."
        ),
        (
            "- `suite.yaml`: the suite as a runnable file, every default filled in (it validates to the same "
            "suite id); `suite.json`: the resolved record; `environment.json`: package versions, device, "
            "plugins and git commit of every run, and what the cells cost."
        ),
    ]
    if figures:
        lines.append(
            "- `figures/`: " + ", ".join(f"`{p.name}`" for p in figures if p.suffix == ".png")
        )
    lines += [
        "",
        "## Environment",
        "",
        f"- devices: {markdown_text(', '.join(summary['devices']))}",
        *([cost_line(environment["cost"])] if environment.get("cost") else []),
        f"- git commits: {markdown_text(', '.join(summary['git_commits']))}",
        "- packages: " + markdown_text(", ".join(f"{k} {'/'.join(v)}" for k, v in summary["packages"].items())),
    ]
    if summary["plugins"]:
        lines.append(
            "- plugins: "
            + ", ".join(
                markdown_text(f"{p['name']} ({p['distribution']} {p['version']})") for p in summary["plugins"]
            )
        )
    out = default_out(str(suite.get("name", name)))
    lines += [
        "",
        "## Reproduce",
        "",
        (
            f"`suite.yaml` is the suite that ran, every default filled in; `benchsuite validate suite.yaml` "
            f"prints its id `{markdown_text(environment['suite_id'])}`. Run it and compare your results with these, row by row:"
        ),
        "",
        "```",
        shell_command(["benchsuite", "validate", target / "suite.yaml"])
        + f"      # suite id {one_line(environment['suite_id'])}",
        shell_command(["benchsuite", "run", target / "suite.yaml", "--out", out]),
        shell_command(["benchsuite", "compare", out, target]),
        "```",
        "",
    ]
    return "\n".join(lines)


def grown_note(versions: SuiteVersions | None) -> list[str]:
    """For a folder run under several suite ids (a grown suite; or cells reused from a bigger
    suite's folder, which is no earlier version of this one): what ran, said plainly."""
    if versions is None or len(versions.suite_ids) < 2:
        return []

    def ids(chosen) -> str:
        return ", ".join(f"`{markdown_text(i)}`" for i in chosen)

    earlier = [i for i in versions.suite_ids if i != versions.final and i not in versions.later]
    named = f"earlier: {ids(earlier)}; " if earlier else ""
    if versions.later:
        named += f"after the final suite first ran, parts of it run as suites of their own, in this folder or merged in: {ids(versions.later)}; "
    return [
        (
            f"This folder was run in {versions.runs} runs under {len(versions.suite_ids)} suite ids "
            f"({named}final: `{markdown_text(versions.final)}`). All {versions.cells:,} cells are cells "
            "of the final suite (same cell id and seed, same plugin versions and engine numerics); "
            f"{versions.earlier_cells:,} of them were computed under another suite id (an earlier version of "
            "this suite, or a suite whose cells they also are, such as a bigger suite whose folder was "
            "reused with `--reuse`), and the final suite computes them the same, so the folder reproduces "
            "from `suite.yaml`."
        ),
        "",
    ]


def _figures(target: Path) -> tuple[list[Path], list[tuple[str, bytes]]]:
    """Figure files from benchsuite.plots (PNG and SVG) and the PNGs to embed; none without matplotlib."""
    try:
        from benchsuite import plots

        paths = plots.plot_results(target)
    except ImportError:
        return [], []
    except BenchsuiteError:  # matplotlib is not installed
        return [], []
    embedded = [(p.stem, p.read_bytes()) for p in paths if p.suffix == ".png"]
    return paths, embedded


def publish(
    sources: Sequence[str | Path],
    target: str | Path,
    *,
    force: bool = False,
    figures: bool = True,
    settings: BootstrapSettings | None = None,
) -> Published:
    """Merge `sources` (result folders of one resolved suite) into `target` and write everything.

    Everything is written into a staging folder beside `target` first and moved into place at the
    end, so a failed publish leaves no half-written folder.
    """
    if not sources:
        raise BenchsuiteError("publish needs at least one result folder")
    settings = settings or BootstrapSettings()
    target = Path(target)
    read = [read_source(s) for s in sources]
    check_compatible(read)
    if any(s.database.resolve().parent == target.resolve() for s in read):
        raise BenchsuiteError(f"{target} is also a source; publish into a new folder")
    replacing = check_target(target, force)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.publishing-", dir=target.parent))
    try:
        cells, duplicates, written = _write_published(read, staging, target, figures, settings)
        _move_into_place(staging, target, replacing)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    files = [target / path.relative_to(staging) for path in written]
    return Published(target, files, cells, duplicates, read)


def _write_published(
    read: Sequence[Source], folder: Path, target: Path, figures: bool, settings: BootstrapSettings
) -> tuple[int, int, list[Path]]:
    """Everything a published folder holds, written into `folder` (a staging folder; the README
    names `target`, where it will be moved)."""
    from benchsuite.leaderboard import leaderboard_from_store
    from benchsuite.reporting.files import write_leaderboard

    database = folder / "results.sqlite"
    cells, duplicates = merge_databases(read, database)
    with Store(database) as store:
        rows = leaderboard_from_store(store, settings=settings)
        runs = store.runs()
        versions = suite_versions(target, runs, store.cell_origins())
        cost = cost_record(store.cells(), store.tuning_trials())
    figure_paths, embedded = _figures(folder) if figures else ([], [])
    suite = runs[-1]["suite"]
    name = suite.get("name", target.name)
    files = write_leaderboard(rows, folder, title=f"Leaderboard: {name}", figures=embedded)
    environment = {**environment_record(runs, read, settings), "cost": cost}
    documents = {
        "suite.yaml": yaml.safe_dump(runnable_document(suite), sort_keys=False, allow_unicode=True),
        "suite.json": json.dumps(suite, indent=2, sort_keys=True) + "\n",
        "environment.json": json.dumps(environment, indent=2) + "\n",
        "README.md": readme(name, target, rows, runs, environment, figure_paths, duplicates, versions),
    }
    for filename, text in documents.items():
        (folder / filename).write_text(text)
        files.append(folder / filename)
    return cells, duplicates, [database, *files, *figure_paths]


# what a published folder may hold besides GENERATED: figures, SQLite's side files, a compressed database
PUBLISHED_EXTRAS = ("figures", "results.sqlite-wal", "results.sqlite-shm", "results.sqlite.gz")


def check_target(target: Path, force: bool) -> bool:
    """Whether publishing replaces an earlier published folder. An existing folder that holds
    anything publish did not write is refused, even with --force: replacing it would lose files."""
    if not target.exists():
        return False
    if not target.is_dir():
        raise BenchsuiteError(f"{target}: exists and is not a folder; publish into a new folder")
    entries = sorted(p.name for p in target.iterdir())
    if not entries:
        return False
    foreign = [name for name in entries if name not in GENERATED + PUBLISHED_EXTRAS]
    if foreign or not {"results.sqlite", "results.sqlite.gz"} & set(entries):
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "") if foreign else "no results.sqlite"
        raise BenchsuiteError(
            f"{target}: exists and is not a published leaderboard ({shown}); publish into a new or empty folder"
        )
    if not force:
        raise BenchsuiteError(f"{target} already holds a published leaderboard; pass --force to replace it")
    return True


def _move_into_place(staging: Path, target: Path, replacing: bool) -> None:
    """Swap the finished staging folder in: a reader sees the old folder or the new, never a mix."""
    if not target.exists():
        staging.rename(target)
        return
    if not replacing:  # an empty folder
        target.rmdir()
        staging.rename(target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.replaced-", dir=target.parent))
    old.rmdir()
    target.rename(old)
    try:
        staging.rename(target)
    except OSError:
        old.rename(target)
        raise
    shutil.rmtree(old, ignore_errors=True)
