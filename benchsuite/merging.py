"""`benchsuite merge`: bring cells computed elsewhere into a suite's result folder.

A suite's cells may be computed anywhere: the same suite on another machine, or a copy of it that
runs a part (with `optimizers: []` it runs the baseline's cells alone: the same cell ids and
seeds) in a folder of its own, beside the suite's own run or on a GPU box. Such a cell belongs in
the suite's folder when it is a cell of that folder's suite computed as the folder's runs compute
it (final_suite.fit: the same cell id and seed, plugin versions and engine revision), the rule
under which a run resumes and `publish` takes a folder. Then a run resuming into the folder skips
it, and the folder publishes as its suite.

A cell the folder already holds is kept as it is, and the merge says whether the copy agreed with
it bit for bit: a check of reproducibility across processes and machines that costs nothing.
Every source is checked before anything is written; each is then copied in one transaction
together with a run of the folder's suite that records the merge (its command, the source, what
was added), so the folder's last run, the suite it publishes as, stays its own and its history
says where every cell came from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchsuite.environment import software_environment
from benchsuite.errors import BenchsuiteError
from benchsuite.final_suite import as_the_final_runs, final_suite, fit
from benchsuite.resolved import expand
from benchsuite.store import FolderLock, Store, database_of, now


@dataclass(frozen=True)
class Merged:
    """What one source brought: its cells, those added, those the folder held already (and which
    of these held other results: the folder's were kept)."""

    source: Path
    cells: int
    added: int
    duplicates: int
    differing: tuple[str, ...]


@dataclass(frozen=True)
class MergeResult:
    folder: Path
    suite_name: str
    suite_cells: int  # cells of the folder's suite
    finished: int  # of them, finished in the folder after the merge
    merged: tuple[Merged, ...]


def merge_folders(out: str | Path, sources: Sequence[str | Path], command: str = "") -> MergeResult:
    """Merge the finished cells of the result folders `sources` into the result folder `out`
    (module docstring). A source holding a cell that is not one of `out`'s suite, or one computed
    with other plugin versions or another engine revision, is refused in one line, and nothing
    is written; so is a folder given twice, and `out` while a run writes into it."""
    database = database_of(out)
    databases = [database_of(source) for source in sources]
    if len({d.resolve() for d in [database, *databases]}) != len(databases) + 1:
        raise BenchsuiteError(f"{out}: the same result folder is given twice (a source may not be the folder merged into)")
    with FolderLock(database):
        with Store(database, read_only=True) as store:
            store.check_network_counts()
            runs, origins = store.runs(), store.cell_origins()
        if not runs:
            raise BenchsuiteError(f"{out}: no runs recorded; run its suite into it first, then merge into it")
        last = runs[-1]
        suite = final_suite(
            out, last, "the cells merged into it must be cells of its suite, but ",
            "run its suite into it with this version of benchsuite first (a run that finds every cell done computes nothing)",
        )  # fmt: skip
        cells = expand(suite)
        expected = as_the_final_runs(suite.metrics, runs, origins, last["suite_id"], check_all=True)
        counts = [_check_source(source, path, cells, expected, out, suite.suite_id) for source, path in zip(sources, databases)]
        merged = []
        with Store(database) as store:
            for source, path, count in zip(sources, databases, counts):
                differing = tuple(store.differing_duplicates(path))
                at = now()
                duplicates = store.merge(path, run={
                    "suite_id": last["suite_id"], "suite": last["suite"], "command": command,
                    "environment": {**software_environment(), "merged_from": str(source)},
                    "started_at": at, "finished_at": at,
                })  # fmt: skip
                merged.append(Merged(Path(source), count, count - duplicates, duplicates, differing))
            finished = len(store.finished_cell_ids() & {cell.cell_id for cell in cells})
    return MergeResult(Path(out), suite.name, len(cells), finished, tuple(merged))


def _check_source(source, path: Path, cells, expected, out, suite_id: str) -> int:
    """The number of the source's finished cells, once they all fit the folder's suite."""
    with Store(path, read_only=True) as store:
        store.verify()
        origins = store.cell_origins()
    result = fit(origins, cells, expected)
    if result.foreign:
        raise BenchsuiteError(
            f"{source}: {len(result.foreign)} of its {len(origins)} cells are no cells of {out}'s suite {suite_id} (they "
            f"ran in suite {result.foreign_suites(origins)}: another task, architecture, optimizer, hyperparameter or "
            "seed); nothing merged"
        )
    if result.unlike:
        raise BenchsuiteError(
            f"{source}: {len(result.unlike)} of its {len(origins)} cells were computed with other plugin versions or "
            f"engine numerics than {out}'s runs use ({result.changes_text('there', f'in {out}')}); nothing merged"
        )
    return len(origins)
