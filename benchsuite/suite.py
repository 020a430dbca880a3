"""Suite files: validation and defaults, into the typed records of benchsuite.resolved.

A suite is validated completely before anything runs. Every default is filled in here, so the
resolved suite is the full record of what ran; its canonical JSON hashes to the suite id. Errors
name the file, the key path and what would be valid.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from benchsuite.architectures.build import check_builds
from benchsuite.errors import PluginError, SuiteError, closest, value_kind
from benchsuite.limits import FLOAT32_MAX, MAX_SECONDS_PER_CELL
from benchsuite.plugins import Registry
from benchsuite.protocol import (
    BATCH_ORDERS,
    BIAS_AUTO,
    DEFAULT_BATCH_ORDER,
    DEFAULT_BATCH_SIZE,
    DEFAULT_BUDGET_PER_TARGET,
    DEFAULT_EPOCHS,
    DEFAULT_OPTIMIZER_PRIOR,
    DEFAULT_SAMPLER_PRIOR,
    DEFAULT_TIE_RULE,
    DEFAULT_TRAINING_DRAW,
    FULL_BATCH,
    TIE_RULES,
    TRAINING_DRAWS,
)
from benchsuite.resolved import (
    TUNING_CRITERIA,
    ArchitectureGrid,
    DataSource,
    Entry,
    OptimizerSettings,
    SamplerSettings,
    Suite,
    Task,
    Tuning,
)

DEFAULT_MODELS_PER_CELL = 20
DEFAULT_MAX_CANDIDATES = 100_000_000
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")
MAX_INTEGER = 2**63 - 1  # SQLite's largest integer: seeds and counts beyond it cannot be stored

# Keys of a gradient-optimizer entry that belong to the host's training loop, with defaults.
TRAINING_DEFAULTS: dict[str, Any] = {
    "prior": DEFAULT_OPTIMIZER_PRIOR,
    "batch_size": DEFAULT_BATCH_SIZE,
    "epochs": DEFAULT_EPOCHS,
    "batch_order": DEFAULT_BATCH_ORDER,
}
# Keys of a baseline (sampler) entry that belong to the host, with defaults.
SAMPLER_DEFAULTS: dict[str, Any] = {"prior": DEFAULT_SAMPLER_PRIOR}
ENTRY_KEYS = ("name", "label", "models", "grid")
# A gradient-optimizer key stored in the resolved settings only when not the default, so that
# suites without it keep their ids: the learning-rate schedule (benchsuite/schedules.py).
SCHEDULE_KEY = "schedule"
# The tuning protocol (docs/tuning.md): the suite's `tuning` section and an entry's `tune` list.
TUNE_KEY = "tune"
TUNING_KEYS = ("trials", "hyperparameters", "networks", "validation_per_class", "seed", "min_fit", "criterion")
TUNING_DEFAULTS = {"trials": 8, "hyperparameters": ["lr"], "networks": 4, "min_fit": 0.5}
MAX_TUNED = 2  # the learning rate and at most one more
MAX_TRIALS = 1_000


# ---------------------------------------------------------------------------------------------
# small checkers: each returns the value (possibly normalised) or raises SuiteError


class _Checker:
    def __init__(self, file: str, allow_large: bool = False):
        self.file = file
        self.allow_large = allow_large  # --allow-large: size limits off (never part of the suite)

    def fail(self, key: str, message: str) -> SuiteError:
        return SuiteError(message, self.file, key)

    def mapping(self, value: Any, key: str, allowed: tuple[str, ...] | dict, required=()) -> dict:
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a mapping with keys {', '.join(allowed)}, got {value_kind(value)}")
        for name in value:
            if name not in allowed:
                raise self.fail(_join(key, str(name)), f"unknown key; {closest(str(name), allowed)}")
        for name in required:
            if name not in value:
                raise self.fail(_join(key, name), "missing required key")
        return value

    def list_of(self, value: Any, key: str, item: Callable[[Any, str], Any], allow_scalar=True) -> list:
        if not isinstance(value, list):
            if allow_scalar:
                value = [value]
            else:
                raise self.fail(key, f"expected a list, got {value_kind(value)}")
        if not value:
            raise self.fail(key, "expected at least one value, got an empty list")
        return [item(v, f"{key}[{i}]") for i, v in enumerate(value)]

    def integer(self, value: Any, key: str, minimum: int | None = None, maximum: int | None = MAX_INTEGER) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"expected an integer, got {value_kind(value)}")
        if minimum is not None and value < minimum:
            raise self.fail(key, f"expected an integer >= {minimum}, got {value}")
        if maximum is not None and value > maximum:  # seeds and counts are stored as SQLite integers
            raise self.fail(key, f"expected an integer <= {maximum}, got {value}")
        return value

    def number(self, value: Any, key: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(key, f"expected a number, got {value_kind(value)}")
        if not math.isfinite(value):
            raise self.fail(key, f"expected a finite number, got {value}")
        return value

    def string(self, value: Any, key: str, choices: tuple[str, ...] | None = None) -> str:
        if not isinstance(value, str):
            raise self.fail(key, f"expected a string, got {value_kind(value)}")
        if choices is not None and value not in choices:
            raise self.fail(key, f"{value!r} is not valid; {closest(value, choices)}")
        return value

    def like(self, value: Any, default: Any, key: str) -> Any:
        """A hyperparameter value of the type its plugin's default has."""
        if default is None:
            return value
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise self.fail(key, f"expected true or false, got {value_kind(value)}")
            return value
        if isinstance(default, int):
            return self.integer(value, key)
        if isinstance(default, float):
            return float(self.number(value, key))
        if isinstance(default, str):
            if not isinstance(value, (str, int, float)):  # bool is an int: "auto" or true/false
                raise self.fail(key, f"expected a string, number or true/false, got {value_kind(value)}")
            return value  # e.g. chunk_size: "auto" or a number; the plugin checks the rest
        return value


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def load_suite(path: str | Path, registry: Registry, *, allow_large: bool = False) -> Suite:
    """Read and validate a suite file. Raises SuiteError naming the file and key.

    `allow_large` lifts the size limits (limits.py) for users who mean it; it is not part of the suite.
    """
    from benchsuite import strict_yaml
    from benchsuite.limits import MAX_SUITE_FILE_BYTES

    path = Path(path)
    try:
        if not path.is_file():
            what = "a folder" if path.is_dir() else "no such file" if not path.exists() else "not a regular file"
            raise SuiteError(f"cannot read the suite file: {what}", str(path))
        size = path.stat().st_size
        if size > MAX_SUITE_FILE_BYTES and not allow_large:
            raise SuiteError(
                f"the suite file has {size:,} bytes; the limit is {MAX_SUITE_FILE_BYTES:,} (--allow-large lifts it)", str(path)
            )
        text = _decoded(path.read_bytes(), str(path))
    except OSError as error:
        raise SuiteError(f"cannot read the suite file: {error.strerror or error}", str(path)) from None
    try:
        document = strict_yaml.load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise SuiteError(f"not valid YAML: {problem}", str(path), where) from None
    return validate_suite(document, registry, str(path), default_name=path.stem, allow_large=allow_large)


def _decoded(data: bytes, file: str) -> str:
    """A suite file's text: UTF-8 (a byte-order mark allowed); the usual wrong kinds named."""
    if data[:2] == b"\x1f\x8b":
        raise SuiteError("a gzip-compressed file, not a suite; decompress it first", file)
    head = data[:4]  # "n\0a\0" or "\0n\0a": UTF-16 without a byte-order mark
    wide = len(head) == 4 and (head[0] == head[2] == 0 < head[1] * head[3] or head[1] == head[3] == 0 < head[0] * head[2])
    if data[:2] in (b"\xff\xfe", b"\xfe\xff") or data[:4] == b"\x00\x00\xfe\xff" or wide:
        raise SuiteError("UTF-16 or UTF-32 text; save the suite as UTF-8", file)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise SuiteError(f"not UTF-8 text (byte {error.start} cannot be decoded); a suite is a UTF-8 YAML file", file) from None


TOP_KEYS = (
    "name", "description", "seed", "device", "models_per_cell", "data", "tasks",
    "architectures", "optimizers", "baselines", "leaderboard", "metrics", "tie_rule", "tuning",
    "max_seconds_per_cell",
)  # fmt: skip


def validate_suite(
    document: Any, registry: Registry, file: str = "", default_name: str = "suite", allow_large: bool = False
) -> Suite:
    check = _Checker(file, allow_large)
    document = check.mapping(document, "", TOP_KEYS, required=("tasks", "architectures"))
    _check_sections(check, document)
    if not document.get("optimizers") and not document.get("baselines"):
        raise check.fail("optimizers", "a suite needs at least one optimizer or baseline")
    models = check.integer(document.get("models_per_cell", DEFAULT_MODELS_PER_CELL), "models_per_cell", 1)
    device = check.string(document.get("device", "auto"), "device")
    if not DEVICE_PATTERN.fullmatch(device):
        raise check.fail("device", f"{device!r} is not a device; valid: auto, cpu, cuda, cuda:N, mps")
    data = check.mapping(document.get("data", {}) or {}, "data", ("root", "download"))
    source = DataSource(
        root=check.string(data["root"], "data.root") if data.get("root") is not None else None,
        download=bool(data.get("download", False)),
    )
    if "download" in data and not isinstance(data["download"], bool):
        raise check.fail("data.download", f"expected true or false, got {value_kind(data['download'])}")

    tasks = check.list_of(document["tasks"], "tasks", lambda v, k: _task(check, v, k, registry), False)
    architectures = check.list_of(
        document["architectures"], "architectures", lambda v, k: _architecture(check, v, k, registry), False
    )
    seed = check.integer(document.get("seed", 0), "seed", 0)
    tuning = _tuning(check, document.get("tuning"), seed, tasks, registry)
    optimizers = _entries(check, document.get("optimizers") or [], "optimizers", registry, models, "optimizer", tuning)
    baselines = _entries(check, document.get("baselines") or [], "baselines", registry, models, "sampler")
    labels = Counter(e.label for e in optimizers + baselines)
    for label, count in labels.items():
        if count > 1:
            raise check.fail("optimizers", f"two entries are labelled {label!r}; give each a distinct `label`")

    board = check.mapping(document.get("leaderboard", {}) or {}, "leaderboard", ("baseline",))
    baseline_labels = tuple(e.label for e in baselines)
    reference = board.get("baseline", baseline_labels[0] if baselines else None)
    if reference is not None:
        check.string(reference, "leaderboard.baseline", baseline_labels)

    metrics = document.get("metrics", []) or []
    if not isinstance(metrics, list):
        metrics = [metrics]
    metrics = [_plugin_name(check, m, f"metrics[{i}]", registry, "metric") for i, m in enumerate(metrics)]
    _unique(check, metrics, "metrics")
    max_seconds = document.get("max_seconds_per_cell")
    if max_seconds is not None:
        max_seconds = float(check.number(max_seconds, "max_seconds_per_cell"))
        if not 0 < max_seconds <= MAX_SECONDS_PER_CELL:
            raise check.fail(
                "max_seconds_per_cell",
                f"expected a number of seconds > 0 and <= {MAX_SECONDS_PER_CELL:,} (a year), got {max_seconds:g}",
            )
    _check_size(check, tasks, architectures, optimizers + baselines)
    _check_no_repeated_cells(check, tasks, architectures)
    _check_shapes(check, tasks, architectures, registry)
    return Suite(
        path=file,
        name=check.string(document.get("name", default_name), "name"),
        description=check.string(document.get("description", ""), "description"),
        seed=seed,
        device=device,
        tie_rule=check.string(document.get("tie_rule", DEFAULT_TIE_RULE), "tie_rule", TIE_RULES),
        models_per_cell=models,
        data=source,
        tasks=tuple(tasks),
        architectures=tuple(architectures),
        optimizers=tuple(optimizers),
        baselines=tuple(baselines),
        reference_baseline=reference,
        metrics=tuple(metrics),
        max_seconds_per_cell=max_seconds,
        tuning=tuning,
    )


def _task(check: _Checker, value: Any, key: str, registry: Registry) -> Task:
    allowed = ("dataset", "classes", "class_pair_seeds", "n_train", "training_set_seeds", "training_draw")
    value = check.mapping(value, key, allowed, required=("dataset", "n_train"))
    name = check.string(value["dataset"], f"{key}.dataset")
    spec = _lookup(check, registry, "dataset", name, f"{key}.dataset")
    if "classes" not in value and value.get("class_pair_seeds") is None:
        raise check.fail(key, "give `classes` (pairs like [7, 0]) or `class_pair_seeds`")
    pair_seeds = None
    if "classes" in value:
        pairs = check.list_of(value["classes"], f"{key}.classes", lambda v, k: _pair(check, v, k, spec), False)
    if value.get("class_pair_seeds") is not None:
        from benchsuite.tasks import class_pair_from_seed

        pair_seeds = check.list_of(value["class_pair_seeds"], f"{key}.class_pair_seeds", check.integer)
        seeded = [list(class_pair_from_seed(s)) for s in pair_seeds]
        # a resolved suite keeps both; they must agree (the seed also seeds the reference draw)
        if "classes" in value and pairs != seeded:
            raise check.fail(f"{key}.classes", f"disagrees with class_pair_seeds, which give {seeded}; give one of the two")
        pairs = seeded
    n_train = check.list_of(value["n_train"], f"{key}.n_train", lambda v, k: _even(check, v, k))
    seeds = check.list_of(value.get("training_set_seeds", [200]), f"{key}.training_set_seeds", check.integer)
    draw = check.string(value.get("training_draw", DEFAULT_TRAINING_DRAW), f"{key}.training_draw", TRAINING_DRAWS)
    _unique(check, pairs, f"{key}.class_pair_seeds" if pair_seeds is not None else f"{key}.classes")
    _unique(check, n_train, f"{key}.n_train")
    _check_class_sizes(check, spec, pairs, n_train, key)
    _unique(check, seeds, f"{key}.training_set_seeds")
    return Task(
        dataset=name,
        classes=tuple(tuple(pair) for pair in pairs),
        class_pair_seeds=None if pair_seeds is None else tuple(pair_seeds),
        n_train=tuple(n_train),
        training_set_seeds=tuple(seeds),
        training_draw=draw,
    )


def _pair(check: _Checker, value: Any, key: str, spec) -> list[int]:
    if not isinstance(value, list) or len(value) != 2:
        raise check.fail(key, f"expected a pair of classes like [7, 0], got {value_kind(value)}")
    pair = []
    for i, item in enumerate(value):
        if isinstance(item, str) and item in spec.class_names:
            item = spec.class_names.index(item)
        item = check.integer(item, f"{key}[{i}]", 0)
        if item >= spec.num_classes:
            raise check.fail(f"{key}[{i}]", f"{spec.name} has classes 0..{spec.num_classes - 1}, got {item}")
        pair.append(item)
    if pair[0] == pair[1]:
        raise check.fail(key, f"the two classes must differ, got {pair}")
    return pair


def _check_class_sizes(check: _Checker, spec, pairs: list, n_train: list[int], key: str) -> None:
    """An N that a class cannot supply (its held-out images plus N/2) fails here where the dataset
    declares its class sizes; the run checks the files it loads either way (runner.preflight)."""
    sizes = getattr(spec, "train_class_sizes", None)
    if not sizes:
        return
    index, largest = max(enumerate(n_train), key=lambda item: item[1])
    needed = spec.holdout_per_class + largest // 2
    for pair in pairs:
        for label in pair:
            have = sizes[label] if label < len(sizes) else 0
            if have < needed:
                most = 2 * max(0, min(sizes[c] if c < len(sizes) else 0 for p in pairs for c in p) - spec.holdout_per_class)
                raise check.fail(
                    f"{key}.n_train[{index}]" if len(n_train) > 1 else f"{key}.n_train",
                    f"{spec.name} class {label} has {have} training images but N={largest} needs {needed} "
                    f"({spec.holdout_per_class} held out + {largest // 2} for training); valid for these classes: N <= {most}",
                )


def _even(check: _Checker, value: Any, key: str) -> int:
    value = check.integer(value, key, 2)
    if value % 2:
        raise check.fail(key, f"n_train is the total of both classes and must be even, got {value}")
    return value


def _architecture(check: _Checker, value: Any, key: str, registry: Registry) -> ArchitectureGrid:
    value = check.mapping(value, key, ("name", "widths", "depths", "bias"), required=("name",))
    name = check.string(value["name"], f"{key}.name")
    spec = _lookup(check, registry, "architecture", name, f"{key}.name")

    def knob(v, k):
        if isinstance(v, bool) or not isinstance(v, (int, float, str)):
            raise check.fail(k, f"expected a number or a string like '1/6', got {value_kind(v)}")
        if isinstance(v, float) and not math.isfinite(v):
            raise check.fail(k, f"expected a finite number or a string like '1/6', got {v}")
        return v

    widths = check.list_of(value.get("widths", [spec.default_width]), f"{key}.widths", knob)
    depths = check.list_of(value.get("depths", [spec.default_depth]), f"{key}.depths", lambda v, k: _depth(check, v, k))
    _unique(check, widths, f"{key}.widths")
    _unique(check, depths, f"{key}.depths")
    bias = value.get("bias", BIAS_AUTO)
    if not isinstance(bias, bool) and bias != BIAS_AUTO:
        raise check.fail(f"{key}.bias", f"expected auto, true or false, got {value_kind(bias)}")
    return ArchitectureGrid(name, tuple(widths), tuple(depths), bias)


def _depth(check: _Checker, value: Any, key: str) -> Any:
    """A depth is an integer or a variant name (the plugin checks which), never a structure."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, str))):
        raise check.fail(key, f"expected an integer or a name like '2c-1f', got {value_kind(value)}")
    return value


def _entries(
    check: _Checker, value: Any, key: str, registry: Registry, models: int, kind: str, tuning: Tuning | None = None
) -> list[Entry]:
    """Optimizer or baseline entries, with grids expanded into one resolved entry each."""
    if not isinstance(value, list):
        raise check.fail(key, f"expected a list of entries, got {value_kind(value)}")
    resolved = []
    for index, entry in enumerate(value):
        resolved += _entry(check, entry, f"{key}[{index}]", registry, models, kind, tuning)
    return resolved


def _entry(
    check: _Checker, entry: Any, key: str, registry: Registry, models: int, kind: str, tuning: Tuning | None = None
) -> list[Entry]:
    if isinstance(entry, str):
        entry = {"name": entry}
    if not isinstance(entry, dict) or "name" not in entry:
        raise check.fail(key, f"expected a mapping with a `name`, got {value_kind(entry)}")
    name = check.string(entry["name"], f"{key}.name")
    spec = _lookup(check, registry, kind, name, f"{key}.name")
    host_defaults = dict(TRAINING_DEFAULTS if kind == "optimizer" else SAMPLER_DEFAULTS)
    budget_key = "max_networks" if kind == "optimizer" else "max_candidates"
    allowed = {**{k: None for k in ENTRY_KEYS}, **host_defaults, budget_key: None, **spec.defaults}
    if kind == "optimizer":
        allowed[SCHEDULE_KEY] = None
        allowed[TUNE_KEY] = None
    check.mapping(entry, key, tuple(allowed))
    grid_keys = tuple(set(allowed) - set(ENTRY_KEYS) - {TUNE_KEY})
    grid = check.mapping(entry.get("grid", {}) or {}, f"{key}.grid", grid_keys)
    axes = {k: check.list_of(v, f"{key}.grid.{k}", lambda x, _: x, False) for k, v in grid.items()}
    _check_grid(check, axes, f"{key}.grid")
    combinations: list[dict] = [{}]
    for axis, values in axes.items():
        combinations = [{**c, axis: v} for c in combinations for v in values]

    expanded = []
    for combination in combinations:
        merged = {**entry, **combination}
        count = check.integer(merged.get("models", models), f"{key}.models", 1)
        settings = {}
        for k, default in host_defaults.items():
            if k == "batch_size" and merged.get(k) == FULL_BATCH:
                settings[k] = FULL_BATCH
                continue
            settings[k] = check.like(merged.get(k, default), default, f"{key}.{k}")
        settings["prior"] = _plugin_name(check, settings["prior"], f"{key}.prior", registry, "prior")
        if kind == "optimizer":
            if settings["batch_size"] != FULL_BATCH:
                settings["batch_size"] = check.integer(settings["batch_size"], f"{key}.batch_size", 1)
            settings["epochs"] = check.integer(settings["epochs"], f"{key}.epochs", 1)
            check.string(settings["batch_order"], f"{key}.batch_order", BATCH_ORDERS)
            schedule = _schedule(check, merged.get(SCHEDULE_KEY), f"{key}.{SCHEDULE_KEY}")
            if schedule is not None:
                settings[SCHEDULE_KEY] = schedule
            budget = merged.get(budget_key, DEFAULT_BUDGET_PER_TARGET * count)
        else:
            budget = merged.get(budget_key, DEFAULT_MAX_CANDIDATES)
        settings[budget_key] = check.integer(budget, f"{key}.{budget_key}", 1)
        hyperparameters = {
            k: _declared_value(check, declared, merged.get(k, declared.default), f"{key}.{k}")
            for k, declared in spec.declared.items()
        }
        for setting_name, setting in hyperparameters.items():
            if isinstance(setting, float) and abs(setting) > FLOAT32_MAX:
                raise check.fail(
                    f"{key}.{setting_name}", f"{setting:g} is beyond float32, in which networks train; valid: |value| <= {FLOAT32_MAX:.4g}"
                )
        _check_hyperparameters(check, spec, kind, hyperparameters, key, settings.get(SCHEDULE_KEY))
        tuned = _tuned(check, spec, merged, key, tuning) if kind == "optimizer" else {}
        label = merged.get("label") or _default_label(name, combination)
        expanded.append(
            Entry(
                name=name,
                label=check.string(label, f"{key}.label"),
                role="optimizer" if kind == "optimizer" else "baseline",
                performance_options=tuple(sorted(getattr(spec, "performance_options", ()))),
                models=count,
                settings=OptimizerSettings(**settings) if kind == "optimizer" else SamplerSettings(**settings),
                hyperparameters=hyperparameters,
                tuned=tuned,
            )
        )
    return expanded


def _tuning(check: _Checker, value: Any, seed: int, tasks: list[Task], registry: Registry) -> Tuning | None:
    """The suite's tuning protocol, every default filled in (docs/tuning.md); None: no tuning."""
    if value is None:
        return None
    value = check.mapping(value, "tuning", TUNING_KEYS)
    names = value.get("hyperparameters", TUNING_DEFAULTS["hyperparameters"])
    names = [] if names == [] else check.list_of(names, "tuning.hyperparameters", check.string)
    _unique(check, names, "tuning.hyperparameters")
    if len(names) > MAX_TUNED:
        raise check.fail("tuning.hyperparameters", f"at most {MAX_TUNED} (the learning rate and one more), got {len(names)}")
    per_class = value.get("validation_per_class")
    if per_class is not None:
        per_class = check.integer(per_class, "tuning.validation_per_class", 1)
        for task in tasks:
            held_out = registry.dataset(task.dataset).holdout_per_class
            if per_class > held_out:
                raise check.fail(
                    "tuning.validation_per_class",
                    f"{task.dataset} holds out {held_out} images per class (the validation split is drawn "
                    f"from them, never from training or test images); got {per_class}",
                )
    min_fit = check.number(value.get("min_fit", TUNING_DEFAULTS["min_fit"]), "tuning.min_fit")
    if not 0 <= min_fit <= 1:
        raise check.fail("tuning.min_fit", f"expected a share in [0, 1], got {min_fit}")
    return Tuning(
        trials=check.integer(value.get("trials", TUNING_DEFAULTS["trials"]), "tuning.trials", 1, MAX_TRIALS),
        hyperparameters=tuple(names),
        networks=check.integer(value.get("networks", TUNING_DEFAULTS["networks"]), "tuning.networks", 1, MAX_TRIALS),
        validation_per_class=per_class,
        seed=check.integer(value.get("seed", seed), "tuning.seed", 0),
        min_fit=float(min_fit),
        criterion=check.string(value.get("criterion", TUNING_CRITERIA[0]), "tuning.criterion", TUNING_CRITERIA),
    )


def _tuned(check: _Checker, spec, entry: dict, key: str, tuning: Tuning | None) -> dict[str, dict]:
    """What this gradient-optimizer entry tunes, each with its declared search space: its `tune`
    list, else the suite's `tuning.hyperparameters`. A tuned setting cannot also be given a value."""
    if TUNE_KEY in entry and tuning is None:
        raise check.fail(f"{key}.{TUNE_KEY}", "needs the suite's `tuning` section (the protocol the values are chosen by)")
    if tuning is None:
        return {}
    names = entry.get(TUNE_KEY, list(tuning.hyperparameters))
    if names is False or names is None:
        names = []
    names = [] if names == [] else check.list_of(names, f"{key}.{TUNE_KEY}", check.string)
    _unique(check, names, f"{key}.{TUNE_KEY}")
    if len(names) > MAX_TUNED:
        raise check.fail(f"{key}.{TUNE_KEY}", f"at most {MAX_TUNED} (the learning rate and one more), got {len(names)}")
    tuned = {}
    for name in names:
        declared = spec.declared.get(name)
        if declared is None:
            raise check.fail(f"{key}.{TUNE_KEY}", f"{spec.name} has no setting {name!r}; {closest(name, spec.declared)}")
        if declared.search is None or declared.type not in (int, float):
            raise check.fail(f"{key}.{TUNE_KEY}", f"{spec.name} declares no search space for {name!r}; it cannot be tuned")
        if name in entry:
            raise check.fail(
                f"{key}.{name}", f"{name} is tuned (tuning.hyperparameters or `tune`); drop the value, or give the entry `tune: []`"
            )
        search = declared.search
        for bound in (search.low, search.high):
            try:
                declared.validate(declared.type(bound) if declared.type is int else float(bound))
            except ValueError as error:
                raise check.fail(f"{key}.{TUNE_KEY}", f"{spec.name}'s search space for {name} lies outside its valid values: {error}") from None
        tuned[name] = {"low": search.low, "high": search.high, "scale": search.scale}
    return tuned


def _schedule(check: _Checker, value: Any, key: str) -> dict | None:
    """A learning-rate schedule, resolved (benchsuite/schedules.py); None: the default."""
    from benchsuite.schedules import ScheduleError, resolve

    if value is None:
        return None
    try:
        return resolve(value)
    except ScheduleError as error:
        raise check.fail(_join(key, error.key) if error.key else key, error.reason) from None


def _plugin_name(check: _Checker, value: Any, key: str, registry: Registry, kind: str) -> str:
    value = check.string(value, key)
    _lookup(check, registry, kind, value, key)
    return value


def _lookup(check: _Checker, registry: Registry, kind: str, name: str, key: str) -> Any:
    """The named record, or the registry's one line (unknown, with the closest names; or given by
    two plugins, naming both) under this key."""
    try:
        return registry.get(kind, name)
    except PluginError as error:
        raise check.fail(key, str(error)) from None


def _default_label(name: str, combination: dict) -> str:
    if not combination:
        return name
    return f"{name}[{','.join(f'{k}={v}' for k, v in combination.items())}]"


def _check_shapes(
    check: _Checker, tasks: list[Task], architectures: list[ArchitectureGrid], registry: Registry
) -> None:
    """Build every architecture once on every dataset's input shape: bad knobs fail here, not mid-run."""
    shapes = {t.dataset: registry.dataset(t.dataset).input_shape for t in tasks}
    for a_index, arch in enumerate(architectures):
        spec = registry.architecture(arch.name)
        for w_index, width in enumerate(arch.widths):
            for d_index, depth in enumerate(arch.depths):
                for dataset, shape in shapes.items():
                    if shape is None:
                        continue
                    try:
                        check_builds(spec, shape, width, depth, arch.bias is True)
                    except Exception as error:  # noqa: BLE001 - the plugin's own message says what is wrong
                        key = f"architectures[{a_index}]"
                        key += f".widths[{w_index}]" if len(arch.widths) > 1 else ""
                        key += f".depths[{d_index}]" if len(arch.depths) > 1 else ""
                        raise check.fail(key, f"{arch.name} (width {width}, depth {depth}) on {dataset} {tuple(shape)}: {error}") from None


# ---------------------------------------------------------------------------------------------
# checks against hostile or mistaken input: wrong kinds, repeats, sizes, run-time ranges

SECTION_KINDS = {
    "data": dict, "leaderboard": dict, "tasks": list, "architectures": list,
    "optimizers": list, "baselines": list, "metrics": list,
}  # fmt: skip


def _check_sections(check: _Checker, document: dict) -> None:
    """A section that is given has its kind (`data: 0`, `optimizers: ""` and `data: []` would
    otherwise read as "use the defaults"). Empty lists stay valid: a resolved suite writes
    `metrics: []` and `baselines: []`, and must validate back to the same id."""
    for name, kind in SECTION_KINDS.items():
        value = document.get(name)
        if value is None:
            continue
        if not isinstance(value, kind):
            wanted = "a mapping" if kind is dict else "a list"
            raise check.fail(name, f"expected {wanted}, got {value_kind(value)}")


def _unique(check: _Checker, values: list, key: str) -> None:
    """Repeated entries would compute the same cell twice (and fail to store the second)."""
    first: dict[str, int] = {}
    for index, value in enumerate(values):
        marker = json.dumps(value, sort_keys=True, default=str)
        if marker in first:
            raise check.fail(f"{key}[{index}]", f"{value!r} is listed twice (also {key}[{first[marker]}]); list it once")
        first[marker] = index


def _check_no_repeated_cells(check: _Checker, tasks: list[Task], architectures: list[ArchitectureGrid]) -> None:
    """Two task or architecture entries that overlap would compute cells twice."""
    seen: dict[tuple, int] = {}
    for index, task in enumerate(tasks):
        for pair in task.classes:
            for n in task.n_train:
                for seed in task.training_set_seeds:
                    cell = (task.dataset, pair, n, seed, task.training_draw)
                    if seen.setdefault(cell, index) != index:
                        raise check.fail(
                            f"tasks[{index}]",
                            f"{task.dataset} classes {list(pair)}, N={n}, training set {seed} is also in tasks[{seen[cell]}]",
                        )
    variants: dict[tuple, int] = {}
    for index, arch in enumerate(architectures):
        for width in arch.widths:
            for depth in arch.depths:
                variant = (arch.name, str(width), str(depth), str(arch.bias))
                if variants.setdefault(variant, index) != index:
                    raise check.fail(
                        f"architectures[{index}]",
                        f"{arch.name} width {width}, depth {depth} is also in architectures[{variants[variant]}]",
                    )


def _check_grid(check: _Checker, axes: dict[str, list], key: str) -> None:
    from benchsuite.limits import MAX_GRID_COMBINATIONS, too_large

    combinations = math.prod(len(values) for values in axes.values())
    if combinations > MAX_GRID_COMBINATIONS and not check.allow_large:
        raise check.fail(key, too_large("grid combinations", combinations, MAX_GRID_COMBINATIONS))


def _check_size(
    check: _Checker, tasks: list[Task], architectures: list[ArchitectureGrid], entries: list[Entry]
) -> None:
    """Cells, epochs and models within the limits (limits.py), counted before anything is built."""
    from benchsuite.limits import (
        MAX_CANDIDATES,
        MAX_CELLS,
        MAX_EPOCHS,
        MAX_MODELS,
        MAX_NETWORKS_TRAINED,
        too_large,
    )

    if check.allow_large:
        return
    task_cells = sum(len(t.classes) * len(t.n_train) * len(t.training_set_seeds) for t in tasks)
    variants = sum(len(a.widths) * len(a.depths) for a in architectures)
    cells = task_cells * variants * len(entries)
    if cells > MAX_CELLS:
        raise check.fail("tasks", too_large("cells", cells, MAX_CELLS))
    for entry in entries:
        key = f"{entry.role}s[{entry.label}]"
        budget = getattr(entry.settings, "max_candidates", None)
        if budget is not None and budget > MAX_CANDIDATES:
            raise check.fail(f"{key}.max_candidates", too_large("candidates per cell", budget, MAX_CANDIDATES))
        budget = getattr(entry.settings, "max_networks", None)
        if budget is not None and budget > MAX_NETWORKS_TRAINED:
            raise check.fail(f"{key}.max_networks", too_large("networks trained per cell", budget, MAX_NETWORKS_TRAINED))
        if entry.models > MAX_MODELS:
            raise check.fail(f"{key}.models", too_large("networks per cell", entry.models, MAX_MODELS))
        epochs = getattr(entry.settings, "epochs", 0)
        if epochs > MAX_EPOCHS:
            raise check.fail(f"{key}.epochs", too_large("epochs", epochs, MAX_EPOCHS))


def _declared_value(check: _Checker, declared, value: Any, key: str) -> Any:
    """A plugin's setting checked against its declaration (type and valid range)."""
    try:
        return declared.validate(value)
    except ValueError as error:
        raise check.fail(key, str(error)) from None


def _check_hyperparameters(
    check: _Checker, spec, kind: str, hyperparameters: dict, key: str, schedule: dict | None = None
) -> None:
    """Values that would crash at run time fail here, before anything is stored: the plugin's own
    `check` (what one declaration cannot say, such as nesterov needing momentum), and for
    optimizers the factory itself, built once on a one-entry parameter (a stack-aware one with a
    stack of one network), which a schedule needs to have an `lr` in each param group."""
    own = getattr(spec, "check", None)
    if own is not None:
        try:
            own(dict(hyperparameters))
        except (ValueError, TypeError) as error:
            name, _, reason = str(error).partition(": ")
            if name in hyperparameters and reason:
                raise check.fail(f"{key}.{name}", reason) from None
            raise check.fail(key, str(error)) from None
    if kind == "optimizer":
        import torch

        from benchsuite.records import Networks

        extra = {"networks": Networks(count=1, seeds=(0,))} if getattr(spec, "stacked", False) else {}
        try:
            built = spec.factory([torch.nn.Parameter(torch.zeros(1))], **hyperparameters, **extra)
        except Exception as error:  # noqa: BLE001 - the optimizer's own message says what is wrong
            raise check.fail(key, f"{spec.name} refuses these hyperparameters: {error}") from None
        groups = getattr(built, "param_groups", None)
        if schedule is not None and (not groups or any("lr" not in g for g in groups)):
            raise check.fail(f"{key}.{SCHEDULE_KEY}", f"{spec.name} has no param_groups with an 'lr' to schedule")
