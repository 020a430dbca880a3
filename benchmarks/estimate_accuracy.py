"""How close `benchsuite estimate` comes to the run it predicts: estimate, then run, same machine.

    python benchmarks/estimate_accuracy.py [FOLDER]

For each suite below: the estimate (2 s probes), then the run itself (cell by cell, into
FOLDER/NAME), then the whole run's wall time against the estimate, and per method and
architecture the estimated search or training against the seconds the cells recorded (which
leave out testing the networks found). Both halves run back to back, so they share the
machine's load; the ratio is what to read. Suites: the quickstart (MLP, SGD/Adam/G&C on digits)
and a LeNet slice of the Fashion-MNIST width study (SGD and G&C, N 4-16, one training set).
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def lenet_slice() -> dict:
    document = yaml.safe_load((ROOT / "suites/peleg-hein/fashion-mnist/width-lenet.yaml").read_text())
    document["name"] = "width-lenet-slice"
    document["tasks"][0].update(n_train=[4, 8, 16], training_set_seeds=[200])
    document["architectures"][0]["widths"] = ["1/6", "2/6"]
    document["models_per_cell"] = 20
    document["device"] = "cpu"
    return document


def main(folder: Path) -> None:
    from benchsuite.estimate import estimate
    from benchsuite.plugins import default_registry
    from benchsuite.runner import run_suite
    from benchsuite.store import Store
    from benchsuite.suite import validate_suite

    registry = default_registry()
    quickstart = yaml.safe_load((ROOT / "suites/quickstart.yaml").read_text())
    quickstart["device"] = "cpu"
    for document in (quickstart, lenet_slice()):
        suite = validate_suite(document, registry, document["name"])
        found = estimate(suite, registry, seconds=2.0)
        started = time.perf_counter()
        run_suite(suite, folder / suite.name, registry, group_cells=False)
        wall = time.perf_counter() - started
        measured: dict[tuple[str, str], float] = defaultdict(float)
        with Store(folder / suite.name / "results.sqlite", read_only=True) as store:
            for cell in store.cells():
                measured[(cell["optimizer"], cell["architecture"])] += cell["seconds"]
        print(f"\n{suite.name}: estimated {found.seconds:.0f} s (probes {found.probe_seconds:.0f} s), ran {wall:.0f} s wall, "
              f"ratio {found.seconds / wall:.2f}")  # fmt: skip
        for group in sorted(found.groups(), key=lambda g: (g["method"], g["architecture"])):
            key = (group["method"], group["architecture"])
            if key in measured:  # cells record the search or training, not the testing after it
                found_part = group["seconds"] - group["evaluation"]
                print(f"  {key[0]:6s} {key[1]:28s} search/training estimated {found_part:7.1f} s, recorded "
                      f"{measured[key]:7.1f} s, ratio {found_part / measured[key]:5.2f}; testing "
                      f"{group['evaluation']:6.1f} s  ({', '.join(group['bases'])})")  # fmt: skip


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="estimate-accuracy-")))
