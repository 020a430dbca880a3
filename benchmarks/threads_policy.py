"""The threading policy (engine/threads.py) beside the code before it, quiet and under a competing
load, in one run: the figures of docs/performance.md, "Threads".

Run (not part of the test run; about 15 minutes on 2 cores):
    PYTHONPATH=. .venv/bin/python benchmarks/threads_policy.py --before <git revision>

`--before` is exported with `git archive` into a temporary folder; every measurement runs in a
fresh process with one tree or the other on PYTHONPATH, the two alternating, so both see the same
machine. "loaded": one busy-loop process per CPU of this process runs meanwhile
(benchmarks/machine.py). Workloads (random inputs of the benchmark task's shapes; speed only):
- train LeNet w=1/2, 1/6 (the vmap path) and the paper MLP w=1 (the mlp path): SGD, batch 2,
  N = 16, one round of K networks through train_networks: network-steps per second;
- evaluate: 100 LeNet w=1/6 networks on 2,000 images, as the runner evaluates (before:
  stacked.evaluate on one thread; after: engine.evaluation.evaluate): network-images per second;
- gnc: Guess & Check on the paper MLP w=1 (unchanged code): candidates per second.
Rates per wall second and per CPU second of the process (all its threads). Each figure is the
best of `--rounds`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from machine import competing_load, describe

ROOT = Path(__file__).resolve().parent.parent

SETUP = """
import json, time, torch
from benchsuite.records import PriorSpec, kaiming_uniform_bound
KAIMING = PriorSpec(name="kaiming-uniform", family="uniform", scale=kaiming_uniform_bound)
g = torch.Generator().manual_seed(0)
def timed(function):
    function(warm=True)
    wall, cpu = time.perf_counter(), time.process_time()
    work = function(warm=False)
    print(json.dumps({"work": work, "wall": time.perf_counter() - wall,
                      "cpu": time.process_time() - cpu}))
"""

TRAIN = """
from benchsuite.architectures.lenet import build_lenet
from benchsuite.architectures.mlp import build_mlp
from benchsuite.builtins.optimizers import benchsuite_optimizers
from benchsuite.engine.batches import round_orders
from benchsuite.engine.training import initial_parameters, train_networks
SGD = next(s for s in benchsuite_optimizers() if s.name == "sgd")
module = {build}
x, y = torch.randn(16, 1, 28, 28, generator=g), torch.arange(16) % 2
def run(warm):  # warm: two rounds (the mlp path times a split one and a whole one first)
    count, epochs = {count}, {epochs}
    parameters, buffers = initial_parameters(module, KAIMING, 0, range(count), "cpu")
    orders = round_orders(0, range(count), 16, epochs, "independent")
    for _ in range(2 if warm else 1):
        train_networks(module, x, y, SGD, dict(SGD.defaults), parameters, buffers, orders, 2)
    return count * epochs * 8
timed(run)
"""

EVALUATE = """
from benchsuite.architectures.lenet import build_lenet
from benchsuite.stacked import init_stacked
try:
    from benchsuite.engine.evaluation import evaluate
except ImportError:  # before: the runner's evaluation
    from benchsuite.engine.threads import one_cpu_thread
    from benchsuite.stacked import evaluate as stacked_evaluate
    def evaluate(*args):
        with one_cpu_thread("cpu"):
            return stacked_evaluate(*args)
module = build_lenet((1, 28, 28), "1/6").eval()
parameters, buffers = init_stacked(module, KAIMING, list(range(100)), "cpu")
x, y = torch.randn(2000, 1, 28, 28, generator=g), torch.arange(2000) % 2
def run(warm):
    n = 200 if warm else 2000
    evaluate(module, parameters, buffers, x[:n], y[:n])
    return 100 * n
timed(run)
"""

GNC = """
from benchsuite.architectures.mlp import build_mlp
from benchsuite.builtins.priors import benchsuite_priors
from benchsuite.engine.gnc import guess_and_check
from benchsuite.records import SamplingRequest
prior = next(p for p in benchsuite_priors() if p.name == "uniform")
module = build_mlp((1, 28, 28), 1)
x, y = torch.randn(16, 1, 28, 28, generator=g), torch.arange(16) % 2
def run(warm):
    budget = 20_000 if warm else 200_000
    request = SamplingRequest(module=module, x_train=x, y_train=y, prior=prior, target=10**9,
                              seed=1, device="cpu", max_candidates=budget, options={})
    return guess_and_check(request).candidates_tried
timed(run)
"""

WORKLOADS = {
    "train LeNet w=1/2 (K=64)": TRAIN.format(
        build='build_lenet((1, 28, 28), "1/2", bias=True)', count=64, epochs=3
    ),
    "train LeNet w=1/6 (K=128)": TRAIN.format(
        build='build_lenet((1, 28, 28), "1/6", bias=True)', count=128, epochs=3
    ),
    "train MLP w=1 (K=51)": TRAIN.format(
        build="build_mlp((1, 28, 28), 1, bias=True)", count=51, epochs=20
    ),
    "evaluate LeNet w=1/6 (100 x 2,000)": EVALUATE,
    "gnc MLP w=1": GNC,
}


def export(revision: str, folder: Path) -> Path:
    """The tree of `revision` (git archive) under `folder`."""
    archive = folder / "before.tar"
    with open(archive, "wb") as out:
        subprocess.run(["git", "archive", revision], cwd=ROOT, stdout=out, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(folder / "before", filter="data")
    return folder / "before"


def measure(tree: Path, code: str) -> dict:
    environment = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, "-c", SETUP + code], env=environment, capture_output=True, text=True,
        check=False, cwd=tree,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {"wall": result["work"] / result["wall"], "cpu": result["work"] / result["cpu"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="git revision of the earlier code")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", default="", help="run workloads whose name contains this")
    arguments = parser.parse_args()
    workloads = {k: v for k, v in WORKLOADS.items() if arguments.only in k}
    best: dict[tuple, dict] = {}
    with tempfile.TemporaryDirectory() as folder:
        trees = {"before": export(arguments.before, Path(folder)), "after": ROOT}
        print(json.dumps(describe()))
        for _ in range(arguments.rounds):
            for load in ("quiet", "loaded"):
                with competing_load() if load == "loaded" else _nothing():
                    for name, code in workloads.items():
                        for version, tree in trees.items():
                            rate = measure(tree, code)
                            key = (name, version, load)
                            if key not in best or rate["wall"] > best[key]["wall"]:
                                best[key] = rate
                            print(name, version, load, {k: round(v) for k, v in rate.items()})
    print("\n| workload | load | before /s (per CPU s) | after /s (per CPU s) | after/before |")
    print("|---|---|---:|---:|---:|")
    for name in workloads:
        for load in ("quiet", "loaded"):
            b, a = best[(name, "before", load)], best[(name, "after", load)]
            print(
                f"| {name} | {load} | {b['wall']:,.0f} ({b['cpu']:,.0f}) | "
                f"{a['wall']:,.0f} ({a['cpu']:,.0f}) | {a['wall'] / b['wall']:.2f}x |"
            )
    print("\n| workload | version | loaded / quiet (wall) | loaded / quiet (per CPU s) |")
    print("|---|---|---:|---:|")
    for name in workloads:
        for version in trees:
            q, loaded = best[(name, version, "quiet")], best[(name, version, "loaded")]
            print(
                f"| {name} | {version} | {loaded['wall'] / q['wall']:.2f} | "
                f"{loaded['cpu'] / q['cpu']:.2f} |"
            )


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


if __name__ == "__main__":
    main()
