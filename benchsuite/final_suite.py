"""A result folder run under several versions of its suite: whether all its cells are cells of the last.

A suite that grows (another N, another training set) is resumed into its folder with
`--resume-anyway`, so the folder's runs record several suite ids. Cell ids and seeds hash what
decides a cell's results, so a cell computed under an earlier version is the very computation the
final suite makes when its (cell id, seed) is a cell of the final suite and it used the plugin
versions and engine arithmetic the final suite's runs used. Such a folder reproduces from the final
suite.yaml, and `publish` takes it; a folder holding any other cell does not, and is refused.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchsuite.errors import BenchsuiteError
from benchsuite.resolved import ENGINE_KEY, Cell, Suite, expand, suite_from_record

WAY_OUT = "run the final suite into a new folder (or with --restart) and publish that"


@dataclass(frozen=True)
class SuiteVersions:
    """The suite versions a folder's runs and cells record, and how its cells split between them."""

    final: str  # the last run's suite id: the suite the folder is published as
    suite_ids: tuple[str, ...]  # every version, in the order the runs first used them
    runs: int
    cells: int
    earlier_cells: int  # cells computed under an earlier version, all of them cells of the final suite


def suite_versions(
    folder: str | Path, runs: Sequence[Mapping[str, Any]], origins: Mapping[str, Mapping[str, Any]]
) -> SuiteVersions:
    """The versions of `folder` (its runs, oldest first, and Store.cell_origins); a BenchsuiteError,
    one line naming the folder, unless every cell is a cell of the final suite computed as it would be."""
    final = runs[-1]["suite_id"]
    ids = tuple(dict.fromkeys([run["suite_id"] for run in runs] + [o["suite_id"] for o in origins.values()]))
    earlier = {cell_id: o for cell_id, o in origins.items() if o["suite_id"] != final}
    versions = SuiteVersions(final, ids, len(runs), len(origins), len(earlier))
    if len(ids) == 1:
        return versions
    suite = _final_suite(folder, runs[-1])
    cells = {cell.cell_id: cell for cell in expand(suite)}
    foreign = [cell_id for cell_id, o in origins.items() if cell_id not in cells or cells[cell_id].seed != o["seed"]]
    if foreign:
        where = ", ".join(sorted({origins[cell_id]["suite_id"] for cell_id in foreign}))
        raise BenchsuiteError(
            f"{folder}: {len(foreign)} of its {len(origins)} cells belong to no cell of its final suite {final} "
            f"(they ran in suite {where}; the final suite dropped or changed them), so the folder does not "
            f"reproduce from the final suite; {WAY_OUT}"
        )
    unlike, changes = _unlike_the_final_runs(earlier, cells, suite.metrics, runs, origins, final)
    if unlike:
        shown = "; ".join(f"{key}: {then} then, {now} in the final suite" for key, (then, now) in sorted(changes.items()))
        raise BenchsuiteError(
            f"{folder}: {unlike} of its cells ran under an earlier suite version with other plugin versions "
            f"or engine numerics than its final suite {final} ({shown}); {WAY_OUT}"
        )
    return versions


def _final_suite(folder: str | Path, run: Mapping[str, Any]) -> Suite:
    """The final run's suite, rebuilt from its stored record; it must hash to the id it ran under."""
    suite: Suite | None
    try:
        suite = suite_from_record(run["suite"])
    except (KeyError, TypeError, ValueError):
        suite = None
    if suite is None or suite.suite_id != run["suite_id"]:
        raise BenchsuiteError(
            f"{folder}: its runs record several suite versions, and its final suite {run['suite_id']} "
            f"cannot be expanded from its stored record (written by another version of benchsuite) to "
            f"check that every cell is one of its cells; {WAY_OUT}"
        )
    return suite


def _unlike_the_final_runs(
    earlier: Mapping[str, Mapping[str, Any]],
    cells: Mapping[str, Cell],
    metrics: Sequence[str],
    runs: Sequence[Mapping[str, Any]],
    origins: Mapping[str, Mapping[str, Any]],
    final: str,
) -> tuple[int, dict[str, tuple[str, str]]]:
    """How many earlier cells recorded plugins (distribution and version) or an engine revision
    other than the final suite's runs used, and what differs. What the final runs used: what
    their cells recorded, key by key; for a key none of them recorded (every such cell was done
    before), the plugins installed and the engine revision their environments record."""
    recorded: dict[str, set[str]] = defaultdict(set)
    for origin in origins.values():
        if origin["suite_id"] == final:
            for key, value in (origin["plugins"] or {}).items():
                recorded[key].add(value)
    final_runs = [run["environment"] for run in runs if run["suite_id"] == final]
    installed = {
        " ".join(filter(None, (p.get("distribution"), p.get("version")))) for env in final_runs for p in env.get("plugins") or []
    }
    engines = {env[ENGINE_KEY] for env in final_runs if ENGINE_KEY in env}

    def used(key: str) -> set[str]:
        return recorded.get(key) or (engines if key == ENGINE_KEY else installed)

    unlike = 0
    changes: dict[str, tuple[str, str]] = {}
    for cell_id, origin in earlier.items():
        then = origin["plugins"] or {}
        keys = [f"{kind} {name}" for kind, name in cells[cell_id].plugins_used(tuple(metrics))] + [ENGINE_KEY]
        differ = {
            key: (then.get(key, "none recorded"), " or ".join(sorted(used(key))) or "none recorded")
            for key in keys
            if then.get(key) not in used(key)
        }
        differ |= {key: (then[key], "not used") for key in then if key not in keys}
        if differ:
            unlike += 1
            changes.update(differ)
    return unlike, changes
