"""Plugin discovery: the host's own modules and the `benchsuite` entry-point group, one registry.

Built-ins are registered through the same loader as third-party plugins. A plugin that fails to
import is reported (warning + `benchsuite plugins`), never fatal; two plugins giving one name is
an error naming both. `BENCHSUITE_DISABLE_PLUGINS=a,b` skips plugins by name.
"""

from __future__ import annotations

import functools
import importlib
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from benchsuite import hookspecs
from benchsuite.errors import PluginError, closest

ENTRY_POINT_GROUP = "benchsuite"
DISABLE_VARIABLE = "BENCHSUITE_DISABLE_PLUGINS"

BUILTIN_MODULES = (
    "benchsuite.builtins.datasets",
    "benchsuite.builtins.architectures",
    "benchsuite.builtins.priors",
    "benchsuite.builtins.optimizers",
    "benchsuite.builtins.samplers",
)

# hook name -> (kind, plural used in messages)
HOOKS = {
    "benchsuite_datasets": "dataset",
    "benchsuite_architectures": "architecture",
    "benchsuite_priors": "prior",
    "benchsuite_optimizers": "optimizer",
    "benchsuite_samplers": "sampler",
}


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

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "module": self.module,
            "status": self.status,
            "error": self.error,
            "provides": self.provides,
        }


class Registry:
    """Every named record contributed by the loaded plugins, by kind."""

    def __init__(self) -> None:
        self.plugins: list[PluginInfo] = []
        self.records: dict[str, dict[str, Any]] = {kind: {} for kind in HOOKS.values()}
        self.providers: dict[tuple[str, str], str] = {}

    def add(self, kind: str, record: Any, plugin: PluginInfo) -> None:
        name = record.name
        key = (kind, name)
        if key in self.providers:
            raise PluginError(
                f"two plugins provide the {kind} {name!r}: {self.providers[key]!r} and "
                f"{plugin.name!r} ({plugin.distribution}); disable one with "
                f"{DISABLE_VARIABLE}={plugin.name}"
            )
        self.providers[key] = f"{plugin.name}"
        self.records[kind][name] = record
        plugin.provides.setdefault(kind, []).append(name)

    def names(self, kind: str) -> list[str]:
        return sorted(self.records[kind])

    def get(self, kind: str, name: str) -> Any:
        try:
            return self.records[kind][name]
        except KeyError:
            raise PluginError(f"unknown {kind} {name!r}; {closest(name, self.records[kind])}") from None

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
    registry = Registry()
    loaded: list[PluginInfo] = []

    candidates = list(_candidates(include_entry_points))
    candidates += [
        (PluginInfo(name, "local", "", getattr(obj, "__name__", repr(obj)), "loaded"), lambda o=obj: o)
        for name, obj in extra
    ]
    for info, load in candidates:
        registry.plugins.append(info)
        if info.name in disabled:
            info.status = "disabled"
            continue
        try:
            plugin = load()
            manager.register(plugin, name=info.name)
        except Exception as error:  # noqa: BLE001 - a broken third-party plugin must not take the host down
            info.status, info.error = "failed", f"{type(error).__name__}: {error}"
            warnings.warn(
                f"benchsuite plugin {info.name!r} from {info.distribution} failed to load: "
                f"{info.error}",
                stacklevel=2,
            )
            continue
        loaded.append(info)

    by_name = {info.name: info for info in loaded}
    order = {info.name: index for index, info in enumerate(loaded)}
    for hook_name, kind in HOOKS.items():
        caller = getattr(manager.hook, hook_name)
        # in load order (built-ins first), so a conflict always names the earlier plugin first
        implementations = sorted(caller.get_hookimpls(), key=lambda i: order[i.plugin_name])
        for implementation in implementations:
            info = by_name[implementation.plugin_name]
            try:
                records = implementation.function() or []
            except Exception as error:  # noqa: BLE001 - same: report the plugin, keep the rest
                info.status, info.error = "failed", f"{hook_name}: {type(error).__name__}: {error}"
                warnings.warn(
                    f"benchsuite plugin {info.name!r} failed in {hook_name}: {error}", stacklevel=2
                )
                continue
            for record in records:
                registry.add(kind, record, info)
    return registry


@functools.lru_cache(maxsize=1)
def default_registry() -> Registry:
    """The registry of this process (built-ins plus installed plugins), loaded once."""
    return load_registry()
