"""The `benchsuite` command: a thin layer over the Python API (suite, runner, leaderboard).

Errors meant for people print one line and exit with code 2; `--verbose` shows tracebacks.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape

from benchsuite.errors import BenchsuiteError
from benchsuite.escaping import terminal_text

console = Console(stderr=True)
stdout = Console()


class BenchsuiteGroup(click.Group):
    """Turns BenchsuiteError into one line on stderr and exit code 2 (tracebacks with --verbose)."""

    def make_context(self, info_name, args, parent=None, **extra):
        words = list(args)  # the words given (sys.argv[1:], or a caller's): run records them
        ctx = super().make_context(info_name, args, parent=parent, **extra)
        ctx.meta["benchsuite.words"] = words
        return ctx

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except BenchsuiteError as error:
            if ctx.obj and ctx.obj.get("verbose"):
                raise
            console.print(f"[bold red]error:[/] {escape(_shortened(terminal_text(error)))}", highlight=False, soft_wrap=True)
            sys.exit(2)
        except KeyboardInterrupt:
            console.print("[yellow]interrupted:[/] finished cells are saved; run the same command again to resume")
            sys.exit(130)


MAX_ERROR_CHARACTERS = 2000  # a hostile value quoted in an error must not flood the terminal


def _shortened(message: str) -> str:
    if len(message) <= MAX_ERROR_CHARACTERS:
        return message
    half = MAX_ERROR_CHARACTERS // 2
    return f"{message[:half]} ... ({len(message) - 2 * half:,} characters left out) ... {message[-half:]}"


@click.group(cls=BenchsuiteGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--verbose", "-v", is_flag=True, help="Show tracebacks and plugin warnings.")
@click.version_option(package_name="benchsuite")
@click.pass_context
def main(ctx: click.Context, verbose: bool) -> None:
    """Benchmark optimizers against random interpolators.

    Every optimizer's interpolating networks (100% training accuracy) are compared, on the same
    tasks, architectures and training sets, with networks drawn from the prior that fit the
    training set too (Guess & Check). Start with:

        benchsuite run suites/quickstart.yaml
    """
    ctx.obj = {"verbose": verbose}
    if not verbose:
        warnings.filterwarnings("ignore", message="benchsuite plugin")


def _registry():
    from benchsuite.plugins import default_registry

    return default_registry()


def _load(path: str, allow_large: bool = False):
    from benchsuite.suite import load_suite

    return load_suite(path, _registry(), allow_large=allow_large)


ALLOW_LARGE_HELP = "Lift the size and memory limits (cells, grids, epochs, models, file size, memory per cell); never part of the suite."


@main.command()
@click.argument("suite", type=click.Path())
@click.option("--out", "-o", type=click.Path(), help="Output folder (default: runs/<suite name>). Running again into the same folder resumes.")
@click.option("--device", help="Override the suite's device: auto, cpu, cuda, cuda:N.")
@click.option("--quiet", "-q", is_flag=True, help="No progress display and no leaderboard on the terminal.")
@click.option("--allow-large", is_flag=True, help=ALLOW_LARGE_HELP)
@click.option("--executor", default="local", show_default=True, help="How cells are executed: local (here), processes (local worker processes), ray (a Ray cluster), or an executor plugin (benchsuite plugins lists them). Results do not depend on it.")
@click.option("--jobs", "-j", help="Workers (processes; ray: CPUs of the local cluster): a number or auto (the CPUs this process may use). Only for executors that declare `jobs`.")
@click.option("--address", help="ray: the cluster to join (auto, HOST:PORT, ray://HOST:PORT); without it a local cluster starts on 127.0.0.1. Only for executors that declare `address`.")
@click.option("--executor-option", "-X", "executor_settings", multiple=True, metavar="NAME=VALUE", help="Any option the executor declares (benchsuite plugins NAME lists them), e.g. -X retries=5 -X gpus_per_unit=0.25.")
@click.option("--restart", "on_mismatch", flag_value="restart", help="If the folder's finished cells are not all cells of this suite (same cell id and seed) with this run's plugin versions and engine revision, or came from an earlier version of the suite (a grown one): keep that database beside (results.superseded-<time>.sqlite) and start afresh.")
@click.option("--resume-anyway", "on_mismatch", flag_value="resume", help="Keep cells that are not this suite's, or of other plugin versions, and resume, knowingly mixing them (publish refuses a folder holding cells its final suite dropped or changed). A grown suite resumes without it.")
@click.option("--reuse", multiple=True, type=click.Path(), metavar="FOLDER", help="A result folder of any suite (a bigger suite's run, a published leaderboard) whose finished cells of this suite are copied in instead of computed: the same cell id and seed, plugin versions and engine revision; any other is computed. Repeatable.")
@click.pass_context
def run(ctx: click.Context, suite: str, out: str | None, device: str | None, quiet: bool, allow_large: bool, executor: str, jobs: str | None, address: str | None, executor_settings: tuple[str, ...], on_mismatch: str | None, reuse: tuple[str, ...]) -> None:
    """Run SUITE (a YAML file) and write results.sqlite and the leaderboard to the output folder.

    Finished cells are committed one by one, so an interrupted run loses at most the cell in
    flight; running the same command again resumes where it stopped.
    """
    from benchsuite.limits import check_memory
    from benchsuite.paths import default_out, shell_command
    from benchsuite.progress import LogProgress, QuietProgress, RichCellProgress
    from benchsuite.reporting.files import write_leaderboard
    from benchsuite.reporting.terminal import to_terminal
    from benchsuite.runner import resolve_executor_options, run_suite
    from benchsuite.suite import DEVICE_PATTERN

    if device is not None and not DEVICE_PATTERN.fullmatch(device):
        raise BenchsuiteError(f"--device: {device!r} is not a device; valid: auto, cpu, cuda, cuda:N, mps")
    loaded = _load(suite, allow_large)
    # an unknown executor, or an option it does not take, stops here, before anything is written
    given = {"jobs": _option_value(jobs), "address": address}
    options = {name: value for name, value in given.items() if value is not None}
    for setting in executor_settings:
        name, equals, value = setting.partition("=")
        if not equals or not name:
            raise BenchsuiteError(f"--executor-option: expected NAME=VALUE, got {setting!r}")
        options[name.strip()] = _option_value(value.strip())
    resolve_executor_options(_registry().executor(executor), options)
    check_memory(loaded, _registry(), device, allow_large)
    out_dir = (Path(out) if out else default_out(loaded.name)).resolve()
    first_line = f"output folder: {terminal_text(out_dir)}"  # once the run starts, never before an error
    if quiet:
        progress = QuietProgress(console, first_line)
    elif console.is_terminal:
        progress = RichCellProgress(console, first_line)
    else:  # a log file: no bars (rich draws none there), a line per finished cell
        progress = LogProgress(console, first_line)
    try:
        rows = run_suite(
            loaded, out_dir, _registry(), progress, device,
            command=shell_command(["benchsuite", *ctx.meta["benchsuite.words"]]), executor=executor,
            on_mismatch=on_mismatch or "stop", executor_options=options, reuse=reuse,
        )  # fmt: skip
    finally:
        if isinstance(progress, RichCellProgress):
            progress.display.stop()  # also when a cell fails: leave the terminal clean
    write_leaderboard(rows, out_dir, title=f"Leaderboard: {loaded.name}")
    if not quiet:
        to_terminal(rows, stdout, title=f"Leaderboard: {loaded.name}")
    console.print(f"results: {terminal_text(out_dir / 'results.sqlite')}  leaderboard: {terminal_text(out_dir / 'leaderboard.md')}", highlight=False, markup=False, soft_wrap=True)


def _option_value(text: str | None):
    """A command-line word as an option value: an integer, a number, true/false, or the text."""
    if text is None:
        return None
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


@main.command()
@click.argument("suite", type=click.Path())
@click.option("--allow-large", is_flag=True, help=ALLOW_LARGE_HELP)
def validate(suite: str, allow_large: bool) -> None:
    """Check SUITE without running it: keys, types, values, plugin names, sizes and memory."""
    from benchsuite.limits import check_memory
    from benchsuite.resolved import expand

    loaded = _load(suite, allow_large)
    check_memory(loaded, _registry(), None, allow_large)
    cells = expand(loaded)
    stdout.print(f"{terminal_text(suite)}: valid; suite id {loaded.suite_id}; {len(cells)} cells", markup=False, highlight=False, soft_wrap=True)


@main.command()
@click.argument("suite", type=click.Path())
@click.option("--device", help="Estimate for this device instead of the suite's: auto, cpu, cuda, cuda:N.")
@click.option("--seconds", type=click.FloatRange(0.1, 600), default=2.0, show_default=True, help="Seconds of each probe: longer is steadier.")
@click.option("--allow-large", is_flag=True, help=ALLOW_LARGE_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print every cell's estimate as JSON instead of the table.")
@click.option("--out", "-o", type=click.Path(), help="A result folder of this suite: estimate only the cells it does not hold yet (what running into it would still do).")
@click.option("--reuse", multiple=True, type=click.Path(), metavar="FOLDER", help="As `run --reuse`: cells of this suite that FOLDER holds are left out too (by cell id; run checks their plugin versions). Repeatable.")
@click.option("--workers", "-j", type=click.IntRange(1, 4096), default=1, show_default=True, help="Also the wall time on this many workers (`run -j`): the cells' units handed out in the run's order.")
def estimate(suite: str, device: str | None, seconds: float, allow_large: bool, as_json: bool, out: str | None, reuse: tuple[str, ...], workers: int) -> None:
    """How long SUITE would take here: each kind of cell run briefly, the rest extrapolated.

    Gradient cells: a few epochs of the first round, timed, times the steps of the full cell
    (and, where the probe trained every epoch, divided by the share that interpolates).
    Samplers: run for --seconds; G&C that sees no fit gets P(fit) from a short subset
    simulation. Testing and metrics per network are timed too. Nothing is written. Run it on
    the machine (and device) that will run the suite, while it is idle: rates differ by orders
    of magnitude, and other work beside the probes makes them read slow (the answer says when
    the load average left no core free).
    """
    from benchsuite.estimate import estimate as estimate_suite
    from benchsuite.progress import probe_progress
    from benchsuite.reporting.terminal import estimate_table
    from benchsuite.suite import DEVICE_PATTERN

    if device is not None and not DEVICE_PATTERN.fullmatch(device):
        raise BenchsuiteError(f"--device: {device!r} is not a device; valid: auto, cpu, cuda, cuda:N, mps")
    loaded = _load(suite, allow_large)
    held = [out] if out is not None else []
    held += reuse
    finished = set().union(*(_finished_cells(folder, loaded) for folder in held))
    with probe_progress(console) as progress:
        found = estimate_suite(loaded, _registry(), device, seconds, progress, finished)
    if as_json:
        click.echo(json.dumps({
            "suite": loaded.name, "suite_id": loaded.suite_id, "device": found.device, "finished": len(finished),
            "seconds": found.seconds, "lower_bound": found.lower_bound, "probe_seconds": found.probe_seconds,
            "workers": workers, "wall_seconds": found.wall_seconds(workers),
            "load_average": found.load, "cpus": found.cpus, "busy": found.busy,
            "cells": [{"cell_id": c.cell.cell_id, "method": c.cell.entry.label, "architecture": c.cell.architecture_label,
                       "n_train": c.cell.n_train, "seconds": c.seconds, "evaluation_seconds": c.evaluation, "basis": c.basis,
                       "note": c.note} for c in found.costs],
        }, indent=1))  # fmt: skip
        return
    if held:
        stdout.print(
            f"{terminal_text(', '.join(held))}: {len(finished)} of the suite's cells finished; estimating the other {len(found.costs)}",
            markup=False, highlight=False, soft_wrap=True,
        )  # fmt: skip
    estimate_table(found, loaded.name, stdout, workers)


def _finished_cells(out: str, suite) -> set[str]:
    """Ids of the cells of `suite` that the result folder `out` holds (read-only: a run may be
    writing it); one line and exit code 2 if there is no results database there."""
    from benchsuite.resolved import expand
    from benchsuite.store import Store

    with Store.open_existing(out) as store:
        held = store.finished_cell_ids()
    return {cell.cell_id for cell in expand(suite)} & held


@main.command()
@click.argument("out", type=click.Path(exists=False))
@click.option("--baseline", help="Label of the baseline that gains are measured against.")
@click.option("--format", "formats", multiple=True, default=["terminal"], show_default=True, help="What to print: terminal, md, csv, json, latex, html, or a reporter plugin's format (then also written as leaderboard.<suffix>); the built-in files are rewritten either way.")
def leaderboard(out: str, baseline: str | None, formats: tuple[str, ...]) -> None:
    """Rebuild the leaderboard of the result folder OUT from its database."""
    from benchsuite.reporting.files import write_leaderboard
    from benchsuite.reporting.reporters import REPORTERS
    from benchsuite.reporting.terminal import to_terminal

    # built-in formats need no plugins (and so no torch); another name is a reporter plugin's
    plugin_formats = [f for f in formats if f != "terminal" and f not in REPORTERS]
    reporters = {f: _registry().get("reporter", f) for f in plugin_formats}
    rows, name, folder = _stored_leaderboard(out, baseline)
    if _may_write(folder):
        write_leaderboard(rows, folder, title=f"Leaderboard: {name}")
        if reporters:
            write_leaderboard(rows, folder, title=f"Leaderboard: {name}", formats=list(reporters), reporters=reporters)
    else:  # a read-only result folder (a published copy, a mounted archive): print, write nothing
        console.print(f"note: {terminal_text(folder)} is read-only; its leaderboard files were not rewritten", markup=False, highlight=False, soft_wrap=True)
    for fmt in formats:
        if fmt == "terminal":
            to_terminal(rows, stdout, title=f"Leaderboard: {name}")
        else:
            click.echo({**REPORTERS, **reporters}[fmt].render(rows), nl=False)


def _stored_leaderboard(out: str, baseline: str | None = None):
    """The leaderboard rows of the result folder (or database) OUT, its suite's name, its folder."""
    from benchsuite.leaderboard import leaderboard_from_store
    from benchsuite.store import Store

    with Store.open_existing(out) as store:
        runs = store.runs()
        rows = leaderboard_from_store(store, baseline)
    name = runs[-1]["suite"]["name"] if runs else "results"
    return rows, name, Path(out) if Path(out).is_dir() else Path(out).parent


def _may_write(folder: Path) -> bool:
    """The folder and the leaderboard files already in it may be written by this process."""
    existing = [*folder.glob("leaderboard.*"), folder / "statistics.json"]
    return os.access(folder, os.W_OK | os.X_OK) and all(os.access(f, os.W_OK) for f in existing if f.exists())


@main.command()
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=False))
@click.option("--to", "target", required=True, type=click.Path(file_okay=False), help="Folder to publish into, e.g. leaderboards/NAME.")
@click.option("--force", is_flag=True, help="Replace a leaderboard already published there.")
@click.option("--no-figures", is_flag=True, help="Skip the figures (they need matplotlib).")
def publish(sources: tuple[str, ...], target: str, force: bool, no_figures: bool) -> None:
    """Merge result folders SOURCES of one resolved suite into a citable leaderboard folder.

    Writes the merged results.sqlite, the leaderboard (md, csv, json, tex, html), statistics.json,
    the resolved suite (suite.yaml, suite.json), environment.json, figures/ and a README.md.
    """
    from benchsuite.publish import publish as publish_folders

    published = publish_folders(sources, target, force=force, figures=not no_figures)
    duplicates = f" ({published.duplicate_cells} duplicate cells skipped)" if published.duplicate_cells else ""
    console.print(f"published {published.cells} cells from {len(sources)} folder(s) to {terminal_text(published.target)}{duplicates}: "
                  f"{terminal_text(published.target / 'leaderboard.html')}", markup=False, highlight=False, soft_wrap=True)


@main.command()
@click.argument("out", type=click.Path(exists=False))
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=False))
@click.pass_context
def merge(ctx: click.Context, out: str, sources: tuple[str, ...]) -> None:
    """Merge the finished cells of result folders SOURCES into the result folder OUT.

    For cells of OUT's suite computed elsewhere: the same suite run on another machine, or a copy
    of it that runs a part (`optimizers: []` runs the baseline's cells alone, with the same cell
    ids and seeds). Every source cell must be a cell of OUT's suite computed with the plugin
    versions and engine revision OUT's runs use, else nothing is merged. A cell OUT holds already
    is kept, and the merge says whether the copy agreed bit for bit. Refused while a run writes
    into OUT; resuming OUT's suite afterwards skips the merged cells. OUT's leaderboard files
    are rebuilt.
    """
    from benchsuite.merging import merge_folders
    from benchsuite.paths import shell_command
    from benchsuite.reporting.files import write_leaderboard

    command = shell_command(["benchsuite", *ctx.meta["benchsuite.words"]])
    result = merge_folders(out, sources, command=command)
    for m in result.merged:
        agreed = ""
        if m.duplicates:
            same = m.duplicates - len(m.differing)
            agreed = f", {m.duplicates:,} already there ({same:,} identical bit for bit"
            agreed += f"; {len(m.differing):,} differ, e.g. cell {m.differing[0]}: the folder's kept)" if m.differing else ")"
        console.print(f"{terminal_text(m.source)}: {m.added:,} of its {m.cells:,} cells added{agreed}", markup=False, highlight=False, soft_wrap=True)
    left = result.suite_cells - result.finished
    console.print(f"{terminal_text(result.folder)}: {result.finished:,} of the {result.suite_cells:,} cells of suite {terminal_text(result.suite_name)!r} finished"
                  + (f", {left:,} to run (resume its suite into it)" if left else ""), markup=False, highlight=False, soft_wrap=True)
    rows, name, folder = _stored_leaderboard(out)
    if _may_write(folder):
        write_leaderboard(rows, folder, title=f"Leaderboard: {name}")


@main.command()
@click.argument("folders", nargs=-1, required=True, type=click.Path(exists=False))
@click.option("--optimizers", nargs=2, metavar="A B", help="Compare two optimizer (or baseline) labels within one folder.")
@click.option("--any-suite", is_flag=True, help="Compare two folders even if they ran different resolved suites.")
@click.option("--format", "fmt", type=click.Choice(["terminal", "md", "csv", "json"]), default="terminal", show_default=True)
def compare(folders: tuple[str, ...], optimizers: tuple[str, str] | None, any_suite: bool, fmt: str) -> None:
    """Paired comparison: two result folders A B row by row, or `DIR --optimizers A B` task by task."""
    from benchsuite import compare as comparing

    if optimizers:
        if len(folders) != 1:
            raise BenchsuiteError("--optimizers compares within one result folder: give exactly one folder")
        comparison = comparing.compare_optimizers(folders[0], *optimizers)
    elif len(folders) == 2:
        comparison = comparing.compare_folders(folders[0], folders[1], any_suite=any_suite)
    else:
        raise BenchsuiteError("compare needs two result folders, or one folder and --optimizers A B")
    if fmt == "terminal":
        comparing.to_terminal(comparison, stdout)
    else:
        click.echo(comparing.render(comparison, fmt), nl=False)


@main.command()
@click.argument("out", type=click.Path(exists=False))
def plot(out: str) -> None:
    """Draw the figures of the result folder OUT into OUT/figures/ (PNG and SVG; needs matplotlib)."""
    from benchsuite.plots import plot_results

    paths = plot_results(out)
    console.print(f"{len(paths)} figure files in {terminal_text(paths[0].parent if paths else out)}", markup=False, highlight=False, soft_wrap=True)


@main.command()
@click.argument("out", type=click.Path(exists=False))
@click.option("--baseline", help="Label of the baseline that gains are measured against (default: the suite's).")
@click.option("--format", "fmt", type=click.Choice(["terminal", "md", "csv", "json"]), default="terminal", show_default=True)
@click.option("--resamples", type=click.IntRange(100, 1_000_000), default=2000, show_default=True, help="Bootstrap resamples of the cells.")
@click.option("--confidence", type=click.FloatRange(0.5, 0.999), default=0.95, show_default=True)
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True, help="Seed of the bootstrap.")
def explain(out: str, baseline: str | None, fmt: str, resamples: int, confidence: float, seed: int) -> None:
    """Which diagnostic tracks the gain over the random interpolators, in the result folder OUT.

    Across the run's cells (an optimizer on one training set of one task, N and architecture),
    per architecture family: Spearman's rank correlation of the cell's mean metric with its gain
    over the baseline, with a bootstrap interval over cells (docs/diagnostics.md).
    """
    from benchsuite import explain as explaining
    from benchsuite.statistics import BootstrapSettings

    explanation = explaining.explain(out, baseline, BootstrapSettings(resamples=resamples, confidence=confidence, seed=seed))
    if fmt == "terminal":
        explaining.to_terminal(explanation, stdout)
    else:
        click.echo(explaining.RENDERERS[fmt](explanation), nl=False)


@main.command()
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins(name: str | None, as_json: bool) -> None:
    """List plugins: name, distribution, version, status and what each provides.

    With NAME (an optimizer, sampler, dataset, architecture or prior), show that record: who
    provides it and the settings a suite may give it, with their types, valid values and defaults.
    """
    from rich.table import Table

    registry = _registry()
    if name is not None:
        _show_record(registry, name, as_json)
        return
    if as_json:
        click.echo(json.dumps([p.as_dict() for p in registry.plugins], indent=2))
        return
    table = Table(title="benchsuite plugins", header_style="bold")
    for column in ("plugin", "distribution", "version", "status", "provides"):
        table.add_column(column)
    for p in registry.plugins:
        provides = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in p.provides.items())
        status = {"loaded": "[green]loaded[/]", "failed": "[red]failed[/]"}.get(p.status, p.status)
        if p.clashes:
            status += f" [yellow](clash: {_safe(', '.join(p.clashes))})[/]"
        table.add_row(_safe(p.name), _safe(p.distribution), _safe(p.version), status, _safe(provides or p.error))
    stdout.print(table)


def _safe(text: str) -> str:
    """Plugin-supplied text for a rich table: no markup, no terminal control characters."""
    return escape(terminal_text(text))


def _show_record(registry, name: str, as_json: bool) -> None:
    shown = []
    for kind in registry.kinds_of(name):
        record = registry.get(kind, name)
        provider = registry.provider(kind, name)
        declared = getattr(record, "declared", {})
        shown.append({
            "kind": kind, "name": name, "plugin": provider.name, "distribution": provider.distribution,
            "version": provider.version, "description": getattr(record, "description", ""),
            **({"elementwise": record.elementwise, "stacked": record.stacked, "uses_closure": record.uses_closure} if kind == "optimizer" else {}),
            "settings": {k: {"type": h.type.__name__, "default": h.default, "valid": h.describe()} for k, h in declared.items()},
        })
    if as_json:
        click.echo(json.dumps(shown, indent=2))
        return
    for item in shown:
        item = {k: terminal_text(v) if isinstance(v, str) else v for k, v in item.items()}
        click.echo(f"{item['kind']} {item['name']}: {item['description']}")
        click.echo(f"  from {item['plugin']} ({item['distribution']} {item['version']})".rstrip())
        if "elementwise" in item:
            stacked = item["elementwise"] or item["stacked"]
            click.echo(f"  elementwise update: {'yes' if item['elementwise'] else 'no'}; stack-aware: {'yes' if item['stacked'] else 'no'} ({'networks train stacked' if stacked else 'one optimizer per network'})")
            if item["uses_closure"]:
                click.echo("  owns its step: yes (step(closure) re-evaluates the batch; docs/optimizer-contract.md)")
        for key, setting in item["settings"].items():
            click.echo(f"  {terminal_text(key)}: {terminal_text(setting['valid'])}")


@main.command("check-plugin")
@click.argument("names", nargs=-1, required=True)
def check_plugin(names: tuple[str, ...]) -> None:
    """Run the conformance checks on the records NAMES (optimizers, samplers, priors, ...).

    Each runs on a tiny task in seconds: settings validate, seeded runs repeat, an optimizer
    trained by the host equals the plain loop of the documented contract (a declared elementwise
    update is verified), a sampler's networks fit. Exits 1 when a check fails.
    """
    from benchsuite.testing import check

    registry = _registry()
    reports = [report for name in names for report in check(name, registry=registry)]
    for report in reports:
        click.echo("\n".join(terminal_text(line) for line in report.render().splitlines()))
    if not all(report.passed for report in reports):
        sys.exit(1)


@main.command("new-plugin")
@click.argument("kind", type=click.Choice(["optimizer", "sampler", "dataset", "metric"]))
@click.argument("name")
@click.option("--out", default=".", show_default=True, type=click.Path(file_okay=False), help="Folder to write benchsuite-NAME into.")
def new_plugin(kind: str, name: str, out: str) -> None:
    """Write a ready-to-install plugin distribution benchsuite-NAME of KIND (pyproject with the
    entry point, the module, a conformance test) that passes check-plugin as generated."""
    from benchsuite.scaffold import new_plugin as write

    folder = write(kind, name, out)
    click.echo(f"wrote {terminal_text(folder)}; next: pip install -e {terminal_text(folder)} && benchsuite check-plugin {name}")


if __name__ == "__main__":
    main()
