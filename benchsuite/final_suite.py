"""A result folder run under several versions of its suite: whether all its cells are cells of the last.

A suite that grows (another N, another training set) resumes into its folder, so the folder's runs
record several suite ids. Cell ids and seeds hash what decides a cell's results, so a cell computed
under an earlier version is the very computation a suite makes when its (cell id, seed) is a cell
of that suite and it used the plugin versions and engine arithmetic that suite's runs use. One
rule (`fit`) serves both sides: the runner resumes a grown folder without a flag when its cells fit
the suite about to run, and `publish` takes a folder whose cells fit its final suite; a folder
holding any other cell is refused by both.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchsuite.errors import BenchsuiteError
from benchsuite.resolved import ENGINE_KEY, Cell, Suite, cell_engine, expand, suite_from_record

WAY_OUT = "run the final suite into a new folder (or with --restart) and publish that"


NOT_RECORDED = "none recorded"

# for a stored cell (the Cell of the suite it matches, its origin from Store.cell_origins), the
# values each key of its recorded `plugins` may take ("optimizer sgd": {"benchsuite 0.1.0"}), or
# None where its plugins are not to be checked
Expected = Callable[[Cell, Mapping[str, Any]], Mapping[str, Collection[str]] | None]


@dataclass(frozen=True)
class Fit:
    """How a folder's finished cells fit a suite: those that are no cell of it, and those that are
    but recorded other plugin versions or another engine revision than it uses."""

    cells: int
    foreign: tuple[str, ...]  # cell ids whose (cell id, seed) is no cell of the suite
    unlike: tuple[str, ...]  # cells of the suite that recorded other plugins or engine revision
    changes: dict[str, tuple[str, str]] = field(default_factory=dict)  # key: (then, what the suite uses)

    @property
    def fits(self) -> bool:
        return not self.foreign and not self.unlike

    def foreign_suites(self, origins: Mapping[str, Mapping[str, Any]]) -> str:
        """The suite ids the foreign cells ran in, for a message."""
        return ", ".join(sorted({origins[cell_id]["suite_id"] for cell_id in self.foreign}))

    def changes_text(self, then: str, now: str) -> str:
        """"key: A then, B now; ..." for a message; `then` and `now` name the two sides."""
        return "; ".join(f"{key}: {a} {then}, {b} {now}" for key, (a, b) in sorted(self.changes.items()))


def fit(origins: Mapping[str, Mapping[str, Any]], cells: Iterable[Cell], expected: Expected) -> Fit:
    """Whether every stored cell (Store.cell_origins) is one of `cells` (the same cell id and
    seed) computed as `expected` says that suite computes it; what does not fit, and why."""
    by_id = {cell.cell_id: cell for cell in cells}
    foreign, unlike, changes = [], [], {}
    for cell_id, origin in origins.items():
        cell = by_id.get(cell_id)
        if cell is None or cell.seed != origin["seed"]:
            foreign.append(cell_id)
            continue
        accepted = expected(cell, origin)
        if accepted is None:
            continue
        then = origin["plugins"] or {}
        differ = {
            key: (then.get(key, NOT_RECORDED), " or ".join(sorted(values)) or NOT_RECORDED)
            for key, values in accepted.items()
            if then.get(key) not in values
        }
        differ |= {key: (then[key], "not used") for key in then if key not in accepted}
        if differ:
            unlike.append(cell_id)
            changes.update(differ)
    return Fit(len(origins), tuple(foreign), tuple(unlike), changes)


@dataclass(frozen=True)
class SuiteVersions:
    """The suite versions a folder's runs and cells record, and how its cells split between them."""

    final: str  # the last run's suite id: the suite the folder is published as
    suite_ids: tuple[str, ...]  # every version, in the order the runs first used them
    runs: int
    cells: int
    earlier_cells: int  # cells computed under another version, all of them cells of the final suite
    # versions first run after the final one was (a copy running part of the suite, merged in:
    # merging.py), not earlier versions of it
    later: tuple[str, ...] = ()


def suite_versions(
    folder: str | Path, runs: Sequence[Mapping[str, Any]], origins: Mapping[str, Mapping[str, Any]]
) -> SuiteVersions:
    """The versions of `folder` (its runs, oldest first, and Store.cell_origins); a BenchsuiteError,
    one line naming the folder, unless every cell is a cell of the final suite computed as it would be."""
    final = runs[-1]["suite_id"]
    ids = tuple(dict.fromkeys([run["suite_id"] for run in runs] + [o["suite_id"] for o in origins.values()]))
    earlier = {cell_id: o for cell_id, o in origins.items() if o["suite_id"] != final}
    order = [run["suite_id"] for run in runs]
    before = set(order[: order.index(final)])
    later = tuple(i for i in dict.fromkeys(order[order.index(final) :]) if i != final and i not in before)
    versions = SuiteVersions(final, ids, len(runs), len(origins), len(earlier), later)
    if len(ids) == 1:
        return versions
    suite = final_suite(folder, runs[-1], "its runs record several suite versions, and ")
    result = fit(origins, expand(suite), as_the_final_runs(suite.metrics, runs, origins, final))
    if result.foreign:
        raise BenchsuiteError(
            f"{folder}: {len(result.foreign)} of its {len(origins)} cells belong to no cell of its final suite {final} "
            f"(they ran in suite {result.foreign_suites(origins)}; the final suite dropped or changed them), so the "
            f"folder does not reproduce from the final suite; {WAY_OUT}"
        )
    if result.unlike:
        shown = result.changes_text("then", "in the final suite")
        raise BenchsuiteError(
            f"{folder}: {len(result.unlike)} of its cells ran under an earlier suite version with other plugin versions "
            f"or engine numerics than its final suite {final} ({shown}); {WAY_OUT}"
        )
    return versions


def final_suite(folder: str | Path, run: Mapping[str, Any], why: str = "", way_out: str = WAY_OUT) -> Suite:
    """The final run's suite, rebuilt from its stored record; it must hash to the id it ran under.
    The error opens its reason with `why` ("its runs record several suite versions, and ") and
    ends with `way_out`."""
    suite: Suite | None
    try:
        suite = suite_from_record(run["suite"])
    except (KeyError, TypeError, ValueError):
        suite = None
    if suite is None or suite.suite_id != run["suite_id"]:
        raise BenchsuiteError(
            f"{folder}: {why}its final suite {run['suite_id']} "
            f"cannot be expanded from its stored record (written by another version of benchsuite) to "
            f"check that every cell is one of its cells; {way_out}"
        )
    return suite


def as_the_final_runs(
    metrics: Sequence[str],
    runs: Sequence[Mapping[str, Any]],
    origins: Mapping[str, Mapping[str, Any]],
    final: str,
    check_all: bool = False,
) -> Expected:
    """What a cell computed under an earlier version must have recorded: the plugins (distribution
    and version) and engine revision the final suite's runs used; its own cells are not checked,
    unless `check_all` (cells from another folder, merging.py, whatever suite they ran in).
    What the final runs used: what their cells recorded, key by key; for a key none of them
    recorded (every such cell was done before), the plugins installed and the engine revision
    their environments record. The engine revision is compared architecture by architecture
    (a revision may leave some architectures' bits as they were: resolved.UNCHANGED_BY)."""
    recorded: dict[str, set[str]] = defaultdict(set)
    engine_of: dict[str, set[str]] = defaultdict(set)  # by architecture: the final cells' records
    for origin in origins.values():
        if origin["suite_id"] == final:
            plugins = origin["plugins"] or {}
            for key, value in plugins.items():
                recorded[key].add(value)
            if ENGINE_KEY in plugins:
                for key in plugins:
                    if key.startswith("architecture "):
                        engine_of[key.removeprefix("architecture ")].add(plugins[ENGINE_KEY])
    final_runs = [run["environment"] for run in runs if run["suite_id"] == final]
    installed = {
        " ".join(filter(None, (p.get("distribution"), p.get("version")))) for env in final_runs for p in env.get("plugins") or []
    }
    engines = {env[ENGINE_KEY] for env in final_runs if ENGINE_KEY in env}

    def used(key: str) -> set[str]:
        return recorded.get(key) or (engines if key == ENGINE_KEY else installed)

    def expected(cell: Cell, origin: Mapping[str, Any]) -> dict[str, set[str]] | None:
        if origin["suite_id"] == final and not check_all:
            return None
        keys = [f"{kind} {name}" for kind, name in cell.plugins_used(tuple(metrics))]
        name = cell.architecture.name
        recorded_then = origin["plugins"] or {}
        engine = engine_of.get(name) or {cell_engine(e, name, recorded_then) for e in engines}
        return {**{key: used(key) for key in keys}, ENGINE_KEY: engine}

    return expected
