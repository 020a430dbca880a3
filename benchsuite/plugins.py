"""Plugin discovery: the host's own modules and the `benchsuite` entry-point group, one registry.

Built-ins are registered through the same loader as third-party plugins. Each plugin's hooks are
called through pluggy (so hookspecs can grow keyword arguments and a plugin's own wrappers apply),
one plugin at a time, so that every record is attributed to the plugin that gave it. A plugin that
fails to import, implements a hook that does not exist, or returns something other than its hook's
records is reported (warning + `benchsuite plugins`) and contributes nothing, never fatal. A name
given by two plugins is listed with the clash marked; only using that name is an error.
`BENCHSUITE_DISABLE_PLUGINS=a,b` skips plugins by name; `BENCHSUITE_TRACE_HOOKS=1` traces every
hook call on stderr.
"""

from __future__ import annotations

import functools
import importlib
import os
import re
import sys
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from benchsuite import hookspecs
from benchsuite.errors import PluginError, closest
from benchsuite.records import (
    ArchitectureSpec,
    DatasetSpec,
    ExecutorSpec,
    MetricSpec,
    OptimizerSpec,
    PriorSpec,
    ReporterSpec,
    SamplerSpec,
)

ENTRY_POINT_GROUP = "benchsuite"
DISABLE_VARIABLE = "BENCHSUITE_DISABLE_PLUGINS"
TRACE_VARIABLE = "BENCHSUITE_TRACE_HOOKS"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")  # usable in a suite, a file, a URL

BUILTIN_MODULES = (
    "benchsuite.builtins.datasets",
    "benchsuite.builtins.architectures",
    "benchsuite.builtins.priors",
    "benchsuite.builtins.optimizers",
    "benchsuite.builtins.samplers",
    "benchsuite.builtins.metrics",
    "benchsuite.builtins.executors",
    "benchsuite.builtins.reporters",
)

# hook name -> (kind, the record type it returns)
HOOKS: dict[str, tuple[str, type]] = {
    "benchsuite_datasets": ("dataset", DatasetSpec),
    "benchsuite_architectures": ("architecture", ArchitectureSpec),
    "benchsuite_priors": ("prior", PriorSpec),
    "benchsuite_optimizers": ("optimizer", OptimizerSpec),
    "benchsuite_samplers": ("sampler", SamplerSpec),
    "benchsuite_metrics": ("metric", MetricSpec),
    "benchsuite_reporters": ("reporter", ReporterSpec),
    "benchsuite_executors": ("executor", ExecutorSpec),
}
KINDS = tuple(kind for kind, _ in HOOKS.values())


@dataclass
class PluginInfo:
    """One plugin as `benchsuite plugins` shows it."""

    name: str
    distribution: str
    version: str
    module: str
    status: str  # "loaded", "failed" or "disabled"
    error: str = ""
    provides: dict[str, list[str]] = field(default_factory=dict)  # kind -> names
    clashes: list[str] = field(default_factory=list)  # "kind name" also given by another plugin

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "module": self.module,
            "status": self.status,
            "error": self.error,
            "provides": self.provides,
            "clashes": self.clashes,
        }

    @property
    def label(self) -> str:
        """Who this plugin is, for messages: name (distribution version)."""
        return f"{self.name} ({' '.join(filter(None, (self.distribution, self.version)))})"


class Registry:
    """Every named record contributed by the loaded plugins, by kind, and who gave it."""

    def __init__(self) -> None:
        self.plugins: list[PluginInfo] = []
        self.records: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}
        self.providers: dict[tuple[str, str], list[PluginInfo]] = {}

    def add(self, kind: str, record: Any, plugin: PluginInfo) -> None:
        name = record.name
        providers = self.providers.setdefault((kind, name), [])
        providers.append(plugin)
        plugin.provides.setdefault(kind, []).append(name)
        if len(providers) == 1:
            self.records[kind][name] = record
            return
        for provider in providers:
            if f"{kind} {name}" not in provider.clashes:
                provider.clashes.append(f"{kind} {name}")

    def names(self, kind: str) -> list[str]:
        return sorted(self.records[kind])

    def get(self, kind: str, name: str) -> Any:
        try:
            record = self.records[kind][name]
        except KeyError:
            raise PluginError(f"unknown {kind} {name!r}; {closest(name, self.records[kind])}") from None
        providers = self.providers[(kind, name)]
        if len(providers) > 1:
            raise PluginError(
                f"two plugins provide the {kind} {name!r}: "
                f"{' and '.join(p.label for p in providers)}; disable one with "
                f"{DISABLE_VARIABLE}={providers[-1].name}"
            )
        return record

    def kinds_of(self, name: str) -> list[str]:
        """The kinds of record called `name` (a name may be, say, both a dataset and a metric);
        none is an error listing the closest names of any kind."""
        kinds = [kind for kind in KINDS if name in self.records[kind]]
        if not kinds:
            every = {n for kind in KINDS for n in self.records[kind]}
            raise PluginError(f"no plugin provides {name!r}; {closest(name, every)}")
        return kinds

    def provider(self, kind: str, name: str) -> PluginInfo:
        """The plugin that gave `name` (its distribution and version go into each cell's record)."""
        self.get(kind, name)
        return self.providers[(kind, name)][0]

    def dataset(self, name: str):
        return self.get("dataset", name)

    def architecture(self, name: str):
        return self.get("architecture", name)

    def prior(self, name: str):
        return self.get("prior", name)

    def optimizer(self, name: str):
        return self.get("optimizer", name)

    def sampler(self, name: str):
        return self.get("sampler", name)

    def metric(self, name: str):
        return self.get("metric", name)

    def executor(self, name: str):
        return self.get("executor", name)


def _distribution_of(entry_point: metadata.EntryPoint) -> tuple[str, str]:
    dist = getattr(entry_point, "dist", None)
    if dist is None:
        return "unknown", ""
    return dist.metadata["Name"] or "unknown", dist.version or ""


def _own_version() -> str:
    try:
        return metadata.version("benchsuite")
    except metadata.PackageNotFoundError:
        from benchsuite import __version__

        return __version__


def _candidates(include_entry_points: bool) -> Iterable[tuple[PluginInfo, Any]]:
    """(info, loader) pairs: built-in modules first, then the entry-point group."""
    version = _own_version()
    for module in BUILTIN_MODULES:
        name = module.rsplit(".", 1)[-1]
        info = PluginInfo(f"builtin-{name}", "benchsuite", version, module, "loaded")
        yield info, functools.partial(importlib.import_module, module)
    if not include_entry_points:
        return
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist, dist_version = _distribution_of(entry_point)
        info = PluginInfo(entry_point.name, dist, dist_version, entry_point.value, "loaded")
        yield info, entry_point.load


def load_registry(
    include_entry_points: bool = True, extra: Iterable[tuple[str, Any]] = ()
) -> Registry:
    """Load every plugin and collect its records. `extra` adds (name, module object) pairs."""
    disabled = {n.strip() for n in os.environ.get(DISABLE_VARIABLE, "").split(",") if n.strip()}
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    if os.environ.get(TRACE_VARIABLE):
        manager.trace.root.setwriter(sys.stderr.write)
        manager.enable_tracing()
    registry = Registry()
    candidates = list(_candidates(include_entry_points))
    candidates += [
        (PluginInfo(name, "local", "", getattr(obj, "__name__", repr(obj)), "loaded"), lambda o=obj: o)
        for name, obj in extra
    ]
    loaded: list[tuple[PluginInfo, Any]] = []
    for info, load in candidates:
        registry.plugins.append(info)
        if info.name in disabled:
            info.status = "disabled"
            continue
        plugin = None
        try:
            plugin = load()
            manager.register(plugin, name=info.name)
            _check_hook_names(manager, plugin)
        except Exception as error:  # noqa: BLE001 - a broken third-party plugin must not take the host down
            if plugin is not None and manager.is_registered(plugin):
                manager.unregister(plugin)
            _fail(info, _reason(error))
            continue
        loaded.append((info, plugin))

    # in load order (built-ins first), so a clash always names the earlier plugin first
    everyone = [plugin for _, plugin in loaded]
    for info, plugin in loaded:
        try:
            others = [p for p in everyone if p is not plugin and manager.is_registered(p)]
            records = _records_of(manager, plugin, others)
        except Exception as error:  # noqa: BLE001 - same: report the plugin, keep the rest
            manager.unregister(plugin)
            _fail(info, _reason(error))
            continue
        for kind, record in records:
            registry.add(kind, record, info)
    return registry


def _reason(error: Exception) -> str:
    return str(error) if isinstance(error, PluginError) else f"{type(error).__name__}: {error}"


def _fail(info: PluginInfo, error: str) -> None:
    info.status, info.error = "failed", error
    warnings.warn(f"benchsuite plugin {info.label} failed to load: {error}", stacklevel=3)


def _check_hook_names(manager: pluggy.PluginManager, plugin: Any) -> None:
    """A misspelled hook provides nothing, silently: refuse it, naming the closest valid hook. A
    hook-named function without @hookimpl is refused too (pluggy would ignore it)."""
    for caller in manager.get_hookcallers(plugin) or []:
        if caller.spec is None:
            raise PluginError(f"unknown hook {caller.name!r}; {closest(caller.name, HOOKS)}")
    implemented = {caller.name for caller in manager.get_hookcallers(plugin) or []}
    for name in HOOKS:
        if name not in implemented and callable(getattr(plugin, name, None)):
            raise PluginError(f"{name} is not marked with @benchsuite.hookimpl, so it would never be called")


def _records_of(manager: pluggy.PluginManager, plugin: Any, others: list[Any]) -> list[tuple[str, Any]]:
    """Call this plugin's hooks through pluggy and check that each returns its hook's records."""
    found = []
    for hook_name, (kind, record_type) in HOOKS.items():
        caller = manager.subset_hook_caller(hook_name, remove_plugins=others)
        for returned in caller():
            if not isinstance(returned, (list, tuple)):
                raise PluginError(f"{hook_name} must return a list of {record_type.__name__}, got {type(returned).__name__}")
            for record in returned:
                if not isinstance(record, record_type):
                    raise PluginError(
                        f"{hook_name} returned a {type(record).__name__}; it must return "
                        f"benchsuite.records.{record_type.__name__} records"
                    )
                if not isinstance(record.name, str) or not NAME_PATTERN.match(record.name):
                    raise PluginError(
                        f"{hook_name}: {record_type.__name__} name {record.name!r} must be 1-64 "
                        "letters, digits or . _ + - (it is written in suites and file names)"
                    )
                found.append((kind, record))
    return found


def hook_reference() -> str:
    """The hook reference of docs/writing-plugins.md, generated from the hookspecs' and records'
    docstrings and fields (tests/test_hookspecs.py keeps the document equal to it)."""
    import dataclasses
    import inspect

    lines = []
    for hook_name, (kind, record_type) in HOOKS.items():
        spec = getattr(hookspecs, hook_name)
        lines += [f"### `{hook_name}() -> list[{record_type.__name__}]`", "", inspect.cleandoc(spec.__doc__), ""]
        lines += [f"`{record_type.__name__}`: {inspect.cleandoc(record_type.__doc__).splitlines()[0]}", ""]
        lines += ["| field | type | default |", "|---|---|---|"]
        for f in dataclasses.fields(record_type):
            if f.default is not dataclasses.MISSING:
                default = f"`{f.default!r}`"
            elif f.default_factory is not dataclasses.MISSING:
                default = f"`{f.default_factory()!r}`"
            else:
                default = "required"
            cells = (f"`{f.name}`", f"`{f.type}`", default)
            lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


@functools.lru_cache(maxsize=1)
def default_registry() -> Registry:
    """The registry of this process (built-ins plus installed plugins), loaded once."""
    return load_registry()
