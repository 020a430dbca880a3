"""What a full run of suites/zoo costs, from a slice and a per-step timing (suites/zoo/README.md).

Needs benchsuite-lion and benchsuite-zoo installed. Three steps, each writing into FOLDER:

    python benchmarks/zoo_cost.py slice FOLDER      # one pair, one training set, N = 8, MLP 1/6, end to end
    python benchmarks/zoo_cost.py steps FOLDER      # seconds per network-step, every optimizer x architecture
    python benchmarks/zoo_cost.py estimate FOLDER   # the model: hours per suite and per optimizer

The model: per cell, (tuning networks + the networks its population trains) x 30 N steps x the
optimizer's seconds per network-step on that architecture (in a stack of 4 for the trials, of 24
for populations; per-network optimizers whatever the stack), scaled by the ratio of the slice's
end-to-end times to the same model (evaluation, acceptance checks, the machine's load), summed
over N, pairs and training sets.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "suites" / "zoo" / "fashion-mnist.yaml"
ARCHITECTURES = {"mlp1/6": ("mlp", "1/6", 4), "mlp1": ("mlp", 1, 4), "lenet1/6": ("lenet", "1/6", "2c-3f")}
EPOCHS = 15  # 60 steps per network at N = 8: enough to time a step


def _document() -> dict:
    return yaml.safe_load(SUITE.read_text())


def _optimizers(document: dict) -> list[dict]:
    return [entry if isinstance(entry, dict) else {"name": entry} for entry in document["optimizers"]]


def run_slice(folder: Path) -> None:
    """Pair seed 202, training set 200, N = 8, MLP 1/6, every optimizer tuned, cells one at a time."""
    from benchsuite.plugins import default_registry
    from benchsuite.runner import run_suite
    from benchsuite.suite import validate_suite

    document = _document()
    document["tasks"][0].update(class_pair_seeds=[202], n_train=[8], training_set_seeds=[200])
    document["architectures"] = [{"name": "mlp", "widths": ["1/6"], "depths": [4]}]
    document["device"] = "cpu"
    suite = validate_suite(document, default_registry(), str(SUITE))
    started = time.perf_counter()
    run_suite(suite, folder / "slice", group_cells=False)
    print(f"slice: {time.perf_counter() - started:.0f} s")


def time_steps(folder: Path) -> None:
    """Seconds per network-step of every optimizer of the suite (its settings) on each architecture."""
    from benchsuite.architectures.build import build_module
    from benchsuite.engine.batches import round_orders
    from benchsuite.engine.training import initial_parameters, optimizer_seeds, train_networks
    from benchsuite.plugins import default_registry
    from benchsuite.tasks import build_task, load_splits

    registry = default_registry()
    spec = registry.dataset("fashion-mnist")
    task = build_task(spec, load_splits(spec), (7, 0), 8, 200)
    seconds = {}
    for label, (name, width, depth) in ARCHITECTURES.items():
        module = build_module(registry.architecture(name), task.input_shape, width, depth, True)
        for entry in [{"name": "sgd"}, *_optimizers(_document())]:  # sgd twice: the first warms up
            optimizer = registry.optimizer(entry["name"])
            settings = {**optimizer.defaults, **{k: v for k, v in entry.items() if k in optimizer.defaults}}
            for count in (4, 24) if (optimizer.elementwise or optimizer.stacked) else (2,):
                attempts = range(count)
                parameters, buffers = initial_parameters(module, registry.prior("kaiming-uniform"), 1, attempts, "cpu")
                orders = round_orders(1, attempts, 8, EPOCHS, "independent")
                started = time.perf_counter()
                train_networks(module, task.x_train, task.y_train, optimizer, settings, parameters, buffers, orders, 2,
                               seeds=optimizer_seeds(optimizer, 1, attempts))  # fmt: skip
                per_step = (time.perf_counter() - started) / (count * EPOCHS * 4)
                seconds[f"{label} {entry['name']} {count}"] = per_step
                print(f"{label:9s} {entry['name']:20s} {count:3d} networks {1e3 * per_step:7.3f} ms/network-step", flush=True)
    (folder / "steps.json").write_text(json.dumps(seconds, indent=1))


def estimate(folder: Path) -> None:
    from benchsuite.store import Store

    steps = json.loads((folder / "steps.json").read_text())
    with Store(folder / "slice" / "results.sqlite", read_only=True) as store:
        cells = {c["cell_id"]: c for c in store.cells()}
        tuning: dict[str, float] = {}
        for trial in store.tuning_trials():
            name = cells[trial["cell_id"]]["optimizer"]
            tuning[name] = tuning.get(name, 0.0) + trial["seconds"]
    observed = {c["optimizer"]: (c["seconds"] + tuning.get(c["optimizer"], 0.0), c["candidates_tried"]) for c in cells.values() if c["role"] == "optimizer"}
    names = [entry["name"] for entry in _optimizers(_document())]

    def model(name: str, label: str, trained: float) -> float:
        stacked = f"{label} {name} 24" in steps
        trials, population = (steps[f"{label} {name} 4"], steps[f"{label} {name} 24"]) if stacked else (steps[f"{label} {name} 2"],) * 2
        return (32 * trials + trained * population) * 240

    scale = sum(s for s, _ in observed.values()) / sum(model(n, "mlp1/6", t) for n, (_, t) in observed.items())
    typical = statistics.median(t for _, t in observed.values())
    combos = {"fashion-mnist": (12, tuple(ARCHITECTURES)), "digits": (8, ("mlp1/6", "mlp1"))}
    print(f"end-to-end / model: {scale:.2f}; networks trained per 20 kept (median): {typical}")
    for suite, (count, labels) in combos.items():
        hours = {n: sum(scale * model(n, a, observed.get(n, (0, typical))[1]) * 7.5 * count for a in labels) / 3600 for n in names}
        print(f"{suite}: {sum(hours.values()):.0f} h of gradient cells; costliest: "
              + ", ".join(f"{n} {h:.1f} h" for n, h in sorted(hours.items(), key=lambda x: -x[1])[:6]))  # fmt: skip


if __name__ == "__main__":
    command, folder = sys.argv[1], Path(sys.argv[2])
    folder.mkdir(parents=True, exist_ok=True)
    {"slice": run_slice, "steps": time_steps, "estimate": estimate}[command](folder)
