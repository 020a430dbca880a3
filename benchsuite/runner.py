"""The runner: expands a suite into cells, runs the unfinished ones, stores each cell whole.

A notebook calls `run_suite(suite, out)`; the CLI is a thin layer over it. The unfinished cells
become units (execution.units.work_units) that an executor plugin runs, here or in other
processes (execution/); this process alone writes the store, each cell as it arrives, once.
Resuming is free: a cell whose id is already in the database is skipped, so a killed run loses
at most the cells in flight. One run writes a folder at a time (store.lock.FolderLock).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from benchsuite import statistics as stats
from benchsuite.engine import NUMERICS_REVISION, native
from benchsuite.environment import capture_environment
from benchsuite.errors import BenchsuiteError
from benchsuite.execution.cells import CellContext, CellOutcome, resolve_device
from benchsuite.execution.job import remote_job, run_unit
from benchsuite.execution.units import stack_sharing, unit_memory, work_units
from benchsuite.final_suite import Fit, fit
from benchsuite.leaderboard import leaderboard_from_store
from benchsuite.paths import check_out_folder, make_folder, remove_empty_folders
from benchsuite.plugins import Registry, default_registry
from benchsuite.records import DataOptions, ExecutionPlan, ExecutorSpec
from benchsuite.resolved import ENGINE_KEY, Cell, Suite, engine_revision, expand
from benchsuite.store import FolderLock, NetworkResult, Store, database_of
from benchsuite.tasks import dataset_files, load_splits

__all__ = ["CellOutcome", "Progress", "run_suite"]


class Progress:
    """What the runner reports; the CLI plugs a rich display in, tests and notebooks may not.

    Several cells may be in flight at once (worker processes): `update_cell` names its cell
    (None: the one started last)."""

    def note(self, line: str) -> None:
        """A line about the run, said before it starts (the folder resumes a grown suite)."""

    def start_run(self, total: int, skipped: int) -> None: ...
    def start_cell(self, cell: Cell, index: int, target: int, unit: str) -> None: ...
    def update_cell(self, accepted: int, work: int, cell: Cell | None = None) -> None: ...
    def finish_cell(self, outcome: CellOutcome) -> None: ...
    def finish_run(self) -> None: ...


class _Events:
    """Turns the progress events of running units (here or in workers) into Progress calls."""

    def __init__(self, progress: Progress, todo: list[Cell]):
        self.progress = progress
        self.cells = {cell.cell_id: (index, cell) for index, cell in enumerate(todo)}
        self.started: set[str] = set()

    def __call__(self, event: tuple) -> None:
        kind, cell_id, *counts = event
        if cell_id not in self.cells:
            return
        index, cell = self.cells[cell_id]
        if kind == "start" or cell_id not in self.started:
            self.started.add(cell_id)
            unit = "candidates" if cell.role == "baseline" else "networks"
            self.progress.start_cell(cell, index, cell.entry.models, unit)
        if kind == "update":
            self.progress.update_cell(counts[0], counts[1], cell)


def resolve_executor_options(spec: ExecutorSpec, given: Mapping[str, Any] | None) -> dict[str, Any]:
    """The executor's options: its defaults, updated by `given`, each checked against its
    declaration; an option it does not declare is a one-line error."""
    values = dict(spec.defaults)
    for name, value in (given or {}).items():
        if name not in spec.options:
            declared = ", ".join(spec.options) or "none"
            raise BenchsuiteError(f"executor {spec.name!r} takes no option {name!r} (its options: {declared})")
        try:
            values[name] = spec.options[name].validate(value)
        except ValueError as error:
            raise BenchsuiteError(f"executor {spec.name!r}, option {name!r}: {error}") from None
    return values


def cell_plugins(cell: Cell, registry: Registry, metrics: tuple[str, ...] = ()) -> dict[str, str]:
    """The distribution and version of every plugin the cell uses ("optimizer sgd": "benchsuite
    0.1.0") and the engine's arithmetic ("engine numerics": "revision 2", the last revision that
    changed the bits of the cell's architecture, resolved.engine_revision): part of the cell's
    record, so results never silently mix plugin versions or engine arithmetics."""
    origins = {}
    for kind, name in cell.plugins_used(metrics):
        provider = registry.provider(kind, name)
        origins[f"{kind} {name}"] = " ".join(filter(None, (provider.distribution, provider.version)))
    name = cell.architecture.name
    builtin = registry.provider("architecture", name).distribution == "benchsuite"
    revision = engine_revision(NUMERICS_REVISION, name if builtin else None)
    origins[ENGINE_KEY] = f"revision {revision}"
    return origins


def resume_fit(origins: Mapping[str, Mapping[str, Any]], cells: list[Cell], suite: Suite, registry: Registry) -> Fit:
    """How a folder's finished cells (Store.cell_origins) fit this run (final_suite.fit, the rule
    `publish` applies): each must be one of its cells, the same cell id and seed, recording the
    plugin versions and engine revision this run records (cell_plugins). A cell of another suite
    version is checked for every key, so a grown suite resumes only onto the very computations
    it would make; a cell of this suite recorded before a key existed (the engine revision) is
    checked for the keys it recorded, as it always was."""

    def expected(cell: Cell, origin: Mapping[str, Any]) -> dict[str, set[str]]:
        now = {key: {value} for key, value in cell_plugins(cell, registry, suite.metrics).items()}
        if origin["suite_id"] != suite.suite_id:
            return now
        then = origin["plugins"] or {}
        return {**{key: {value} for key, value in then.items()}, **{key: now[key] for key in then if key in now}}

    return fit(origins, cells, expected)


def _finished(count: int) -> str:
    return "its one finished cell is a cell" if count == 1 else f"all {count} finished cells are cells"


def mismatch_line(path: Path, origins: Mapping[str, Mapping[str, Any]], result: Fit, suite: Suite) -> str:
    """The one line a run stops with when the folder's finished cells do not fit it."""
    finished = f"of its {len(origins)} finished cells"
    reasons = []
    if result.foreign:
        reasons.append(
            f"{len(result.foreign)} {finished} are no cells of this suite {suite.suite_id} (they ran in suite "
            f"{result.foreign_suites(origins)}; this suite dropped or changed them)"
        )
        finished = ""
    if result.unlike:
        changed = result.changes_text("then", "now")
        reasons.append(
            f"{len(result.unlike)} {finished}{' ' if finished else ''}ran other plugin versions or another engine "
            f"revision than this run uses ({changed})"
        )
    other_version = any(origins[cell_id]["suite_id"] != suite.suite_id for cell_id in result.unlike)
    refused = "; publish then refuses the folder" if result.foreign or other_version else ""
    return (
        f"{path}: {' and '.join(reasons)}; resuming would mix them. Run into a new folder, or pass --restart "
        f"(keeps the old database beside it and starts afresh) or --resume-anyway (keeps them, knowingly mixed{refused})"
    )


def cell_record(outcome: CellOutcome, run_id: int, suite_id: str, class_names: tuple) -> dict:
    """The `cells` row of a finished cell."""
    cell = outcome.cell
    names = [class_names[c] if c < len(class_names) else str(c) for c in cell.classes]
    return {
        "cell_id": cell.cell_id,
        "run_id": run_id,
        "suite_id": suite_id,
        "dataset": cell.dataset,
        "classes": ",".join(str(c) for c in cell.classes),
        "class_names": " vs ".join(names),
        "n_train": cell.n_train,
        "training_set_seed": cell.training_set_seed,
        "training_draw": cell.training_draw,  # with class_pair_seed: stored in training_indices
        "class_pair_seed": cell.class_pair_seed,
        "n_test": outcome.n_test,
        "architecture": cell.architecture_label,
        "architecture_name": cell.architecture.name,
        "width": str(cell.architecture.width),
        "depth": str(cell.architecture.depth),
        "optimizer": cell.entry.label,
        "optimizer_name": cell.entry.name,
        "role": cell.role,
        "prior": cell.entry.settings.prior,
        "hyperparameters": _json({**cell.entry.settings.to_json(), **cell.entry.hyperparameters}),
        "models_requested": cell.entry.models,
        "candidates_tried": int(outcome.candidates_tried),
        "epochs": outcome.epochs,
        "seconds": float(outcome.seconds),
        "exhausted": int(bool(outcome.exhausted)),
        "seed": cell.seed,
        "device": outcome.device,
        "status": outcome.status,
        "status_detail": outcome.detail or None,
        "diverged": outcome.diverged,
    }


def network_results(outcome: CellOutcome) -> list[NetworkResult]:
    """The stored rows of a cell's networks, in population order."""
    return list(outcome.networks)


def cell_estimates(estimates: dict[str, float], networks: list[NetworkResult]) -> dict[str, float]:
    """A sampler's estimates, with the agreement of its networks' test accuracy between its
    chains (R-hat, repeat ESS: statistics.chain_agreement) added where it has estimates."""
    if not estimates:
        return estimates
    agreement = stats.chain_agreement([n.test_acc for n in networks], [n.chain for n in networks])
    return {**estimates, **{k: v for k, v in agreement.items() if math.isfinite(v)}}


def _json(value) -> str:
    return json.dumps(value, sort_keys=True)


def preflight(suite: Suite, registry: Registry, data: DataOptions) -> dict[str, list[dict]]:
    """Load every dataset and check every class is large enough for the largest N, before anything
    is stored (a failure after the first cell would leave a half-run folder). Returns the files
    each dataset was read from (path, bytes, sha256): the run's data provenance."""
    files = {}
    for index, task in enumerate(suite.tasks):
        spec = registry.dataset(task.dataset)
        splits = load_splits(spec, data)
        files[spec.name] = dataset_files(spec, data)
        counts = torch.bincount(splits.train_labels, minlength=spec.num_classes).tolist()
        largest = max(task.n_train)
        needed = spec.holdout_per_class + largest // 2
        for pair in task.classes:
            for label in pair:
                have = counts[label] if label < len(counts) else 0
                if have < needed:
                    raise BenchsuiteError(
                        f"{suite.path}: tasks[{index}]: {spec.name} class {label} has {have} training images "
                        f"but N={largest} needs {needed} ({spec.holdout_per_class} held out + {largest // 2} "
                        "for training); lower n_train"
                    )
    return files


@contextmanager
def _output(out: Path) -> Iterator[Path]:
    """The run's database in `out`, with the folder's lock held. A run that fails leaves nothing
    behind: a database it created that holds no finished cell is removed, and so are the folders
    it created, if empty (cells that did finish are kept, for the rerun to resume)."""
    created = make_folder(out)
    database = out / "results.sqlite"
    try:
        with FolderLock(database):
            new = Store.is_empty(database)
            try:
                yield database
            except BaseException:
                if new:
                    Store.remove_if_no_cells(database)
                raise
    except BaseException:
        remove_empty_folders(created)
        raise


MISMATCH_POLICIES = ("stop", "restart", "resume")


def _check_resumable(
    path: Path, cells: list[Cell], suite: Suite, registry: Registry, on_mismatch: str, progress: Progress
) -> None:
    """Resume only onto finished cells that fit this run (resume_fit): a folder of this suite, or
    of an earlier version whose every cell is a cell of this one (a suite grown by an N resumes
    without a flag, saying so). Otherwise stop in one line, or with on_mismatch "restart" keep the
    old database beside and start afresh ("restart" also starts a grown folder afresh);
    "resume" keeps whatever is there, unchecked."""
    if on_mismatch not in MISMATCH_POLICIES:
        raise ValueError(f"on_mismatch must be one of {MISMATCH_POLICIES}, got {on_mismatch!r}")
    if Store.is_empty(path) or on_mismatch == "resume":
        return
    with Store(path, read_only=True) as store:
        if on_mismatch == "stop":  # lost networks are said first ("restart" sets the database aside)
            store.check_network_counts()
        origins = store.cell_origins()
    result = resume_fit(origins, cells, suite, registry)
    versions = {origin["suite_id"] for origin in origins.values()} - {suite.suite_id}
    if result.fits and not (versions and on_mismatch == "restart"):
        if versions:
            todo = len(cells) - len(origins)
            progress.note(
                f"resuming under another version of the suite than the folder's earlier runs; "
                f"{_finished(len(origins))} of this suite (same cell id, seed, plugin versions and engine "
                f"revision), {todo} to run"
            )
        return
    if on_mismatch == "stop":
        raise BenchsuiteError(mismatch_line(path, origins, result, suite))
    stamp = time.strftime("%Y%m%dT%H%M%S")
    path.rename(path.with_name(f"results.superseded-{stamp}.sqlite"))


def reuse_cells(
    store: Store, sources: Mapping[str, Path], cells: list[Cell], suite: Suite, registry: Registry, progress: Progress
) -> None:
    """Copy into `store` the finished cells of other result folders (`sources`: name to database;
    any suite's folder: a bigger suite's, a published leaderboard) that are cells of this run and
    fit it as a resumed cell must (resume_fit: same cell id and seed, plugin versions and engine
    revision). A cell that does not fit is left for the run to compute; `progress.note` says how
    many were reused and left. Every source is read and checked before anything is copied."""
    finished = store.finished_cell_ids()
    plans = []
    for name, path in sources.items():
        with Store(path, read_only=True) as other:
            other.verify()
            origins = other.cell_origins()
        unfinished = {cell_id: origin for cell_id, origin in origins.items() if cell_id not in finished}
        result = resume_fit(unfinished, cells, suite, registry)
        unlike, foreign = set(result.unlike), set(result.foreign)
        taken = [cell_id for cell_id in unfinished if cell_id not in unlike and cell_id not in foreign]
        finished |= set(taken)
        plans.append((name, path, taken, len(unlike), len(origins)))
    for name, path, taken, unlike, count in plans:
        if taken:
            store.merge(path, cells=taken)
        left = f"; {unlike:,} left to compute (other plugin versions or engine revision)" if unlike else ""
        progress.note(f"reused {len(taken):,} cells of this suite from {name} ({count:,} finished there){left}")
    progress.note(f"{sum(cell.cell_id not in finished for cell in cells):,} of the suite's {len(cells):,} cells to run")


def run_suite(
    suite: Suite,
    out: str | Path,
    registry: Registry | None = None,
    progress: Progress | None = None,
    device: str | None = None,
    command: str = "",
    group_cells: bool = True,
    executor: str = "local",
    on_mismatch: str = "stop",
    executor_options: Mapping[str, Any] | None = None,
    reuse: Sequence[str | Path] = (),
) -> list[dict]:
    """Run every unfinished cell of `suite` into `out`; return the leaderboard rows.

    Writes only `out/results.sqlite` (and holds `out/results.sqlite.lock` while it runs, so a
    second run into the folder stops with one line): rendering the rows (files, terminal) is the
    caller's choice (benchsuite.reporting.files.write_leaderboard; the CLI writes every format).

    group_cells: train gradient cells that differ only in class pair and training set together,
    and run a sampler's cells that differ only in N in one process in N order (identical
    results; False runs cell by cell, as the benchmarks' reference does).
    executor: the plugin that executes the units of cells (`local`: one after another, here;
    `processes`: in worker processes; `ray`: on a Ray cluster), with `executor_options` (such as
    {"jobs": 4}); whichever runs them, this process alone writes the store, as each cell
    finishes, and a cell delivered twice (a retried unit) is written once.
    on_mismatch: what to do when `out` holds finished cells that are no cells of this suite (same
    cell id and seed) or that recorded other plugin versions or engine revision than this run
    (cells of an earlier version of the suite that are all its cells, a grown suite's, resume
    and `progress.note` says so): "stop" (a one-line error, nothing written), "restart" (the
    old database is kept beside as results.superseded-<time>.sqlite, the run starts afresh; also
    for a grown suite's folder) or "resume" (keep them, knowingly).
    reuse: result folders whose finished cells of this suite are copied in, not computed
    (reuse_cells), before the run starts."""
    registry = registry or default_registry()
    progress = progress or Progress()
    out = Path(out)
    check_out_folder(out)  # a file, under a file, not writable: refused before any work
    requested_device = device or suite.device
    torch_device = resolve_device(requested_device)
    data = DataOptions(
        root=Path(suite.data.root).expanduser() if suite.data.root else None,
        download=suite.data.download,
    )
    cells = expand(suite)
    spec = registry.executor(executor)
    options = resolve_executor_options(spec, executor_options)
    data_files = preflight(suite, registry, data)
    environment = {**capture_environment(torch_device, registry), "data_files": data_files}
    environment["executor"] = {"name": spec.name, "options": options}
    environment[ENGINE_KEY] = f"revision {NUMERICS_REVISION}"  # also for a run that computes no cell
    environment["compiled_kernels"] = native.library() is not None  # engine/native.py
    max_seconds = suite.max_seconds_per_cell
    reused = {str(source): database_of(source) for source in reuse}  # a folder without results: refused here
    if any(path.resolve() == (out / "results.sqlite").resolve() for path in reused.values()):
        raise BenchsuiteError(f"{out}: --reuse names the run's own folder; name other result folders")
    with _output(out) as database:
        _check_resumable(database, cells, suite, registry, on_mismatch, progress)
        with Store(database) as store:
            store.check_network_counts()
            if reused:
                reuse_cells(store, reused, cells, suite, registry, progress)
            finished = store.finished_cell_ids()
            todo = [c for c in cells if c.cell_id not in finished]
            run_id = store.start_run(suite.suite_id, suite.resolved, environment, command)
            progress.start_run(len(cells), len(cells) - len(todo))
            context = CellContext(registry, data, torch_device, suite.metrics, max_seconds)
            events = _Events(progress, todo)
            plan = ExecutionPlan(
                units=work_units(todo, group_cells, stack_sharing(registry)),
                run_unit=lambda unit: run_unit(unit, context, events),
                make_job=lambda: remote_job(registry, requested_device, data, suite.metrics, max_seconds),
                report=events,
                options=options,
                memory=lambda unit: unit_memory(unit, registry, str(torch_device)),
                device=str(torch_device),
            )
            stored = set(finished)
            for outcome in spec.execute(plan):
                cell_id = outcome.cell.cell_id
                if cell_id in stored:  # a retried unit delivers its cells again: written once
                    continue
                class_names = registry.dataset(outcome.cell.dataset).class_names
                record = cell_record(outcome, run_id, suite.suite_id, class_names)
                record["plugins"] = _json(cell_plugins(outcome.cell, registry, suite.metrics))
                networks = network_results(outcome)
                estimates = cell_estimates(outcome.estimates, networks)
                store.add_cell(record, networks, outcome.train_indices, estimates, outcome.tuning)
                stored.add(cell_id)
                progress.finish_cell(outcome)
            missing = [c for c in todo if c.cell_id not in stored]
            if missing:
                raise BenchsuiteError(
                    f"executor {spec.name!r} finished without delivering {len(missing)} cell(s) "
                    f"(the first: {missing[0].cell_id}); the others are saved, run the same command again to retry them"
                )
            store.finish_run(run_id)
            progress.finish_run()
            return leaderboard_from_store(store, suite.reference_baseline)
