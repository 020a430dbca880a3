"""The MLP sampler against its floor: G&C candidates per CPU-second / raw Philox per CPU-second.

    PYTHONPATH=. .venv/bin/python benchmarks/sampler_floor.py                  (this tree)
    PYTHONPATH=. .venv/bin/python benchmarks/sampler_floor.py --trees OLD NEW   (trees alternately)

Why: G&C on the paper MLP cannot beat the generator that draws its weights; the fraction of that
floor it reaches says how much the conversion, the copies, the forward and Python cost on top.
Everything runs on one thread and is timed with time.thread_time (CPU seconds of this thread),
so other processes on a shared machine change the figures little; floor and engine alternate
within a run and the fastest round of each is kept.

Floor: the numpy calls the engine makes for its random words (one numpy Philox per chunk of 256
draws, `random_raw` of one cache-sized piece at a time), words only, nothing converted. Engine:
guess_and_check on the benchmark task of test_bench_gnc.py (Fashion-MNIST 0 vs 7, N = 16, paper
MLP w=1, U[-1, 1]; target never reached) on one worker thread. Both in candidates: a draw is two
candidates (the output swap).

--trees runs this script once per tree and round with PYTHONPATH=TREE, alternating, so an old and
a new engine are compared in the same shell run (each child reports its own floor as well).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def floor_rate(draws: int) -> float:
    """Candidates per CPU-second that the raw words alone allow (2 candidates per draw)."""
    from benchsuite.engine import random as rng
    from benchsuite.engine.draws import CPU_PIECE_BYTES

    words = rng.words_per_draw(32904)  # the paper MLP w=1: 32,904 weights
    piece = max(1, CPU_PIECE_BYTES // (8 * words))
    chunk = 256
    start = time.thread_time()
    for first in range(0, draws, chunk):
        count = min(chunk, draws - first)
        stream = rng.numpy_stream(1234, first, words)
        for a in range(0, count, piece):
            stream.random_raw(min(piece, count - a) * words)
    return 2 * draws / (time.thread_time() - start)


def kernel_floor_rate(draws: int) -> float | None:
    """The same for the compiled kernel (engine/native.py) where the engine uses it: every number
    of a piece of draws generated and converted into one L2-sized float32 buffer, nothing scaled or
    placed. None where the tree has no kernel or it is not built here."""
    try:
        from benchsuite.engine import native
    except ImportError:
        return None
    from benchsuite.engine import random as rng
    from benchsuite.engine.draws import CPU_PIECE_BYTES

    lib = native.library()
    if lib is None:
        return None
    words = rng.words_per_draw(32904)
    blocks, piece = words // 4, max(1, CPU_PIECE_BYTES // (8 * words))
    buffer = np.empty((piece, 2 * words), dtype=np.float32)
    start = time.thread_time()
    for a in range(0, draws, piece):
        count = min(piece, draws - a)
        native.fill(lib, 1234, a, blocks, [(0, 2 * words, 1.0, buffer[:count])])
    return 2 * draws / (time.thread_time() - start)


def engine_rate(draws: int, task, module) -> tuple[float, int]:
    """(candidates per CPU-second of G&C on one thread, networks accepted)."""
    from benchsuite.builtins.priors import benchsuite_priors
    from benchsuite.engine import gnc
    from benchsuite.records import SamplingRequest

    uniform = {p.name: p for p in benchsuite_priors()}["uniform"]
    x, y = task
    request = SamplingRequest(
        module=module, x_train=x, y_train=y, prior=uniform, target=10**12,
        max_candidates=2 * draws, seed=1234, device="cpu",
        options={"reuse_nested": False, "cpu_threads": 1},
    )  # fmt: skip
    start = time.thread_time()
    population = gnc.guess_and_check(request)
    seconds = time.thread_time() - start
    return population.candidates_tried / seconds, population.size


def measure(draws: int, rounds: int) -> dict:
    """Floor and engine alternately, `rounds` times each; the fastest round of each."""
    import torch

    sys.path.insert(0, str(HERE))
    from conftest import load_task, paper_mlp

    torch.set_num_threads(1)
    task, module = load_task(), paper_mlp()
    engine_rate(256, task, module)  # warm-up: the first call builds plans and checks the swap
    floors, kernel_floors, engines, accepted = [], [], [], None
    for _ in range(rounds):
        floors.append(floor_rate(draws))
        kernel_floors.append(kernel_floor_rate(draws))
        rate, accepted = engine_rate(draws, task, module)
        engines.append(rate)
    return {
        "floor": max(floors),
        "engine": max(engines),
        "fraction": max(engines) / max(floors),
        "floors": floors,
        "kernel_floors": kernel_floors,
        "engines": engines,
        "accepted": accepted,
        "draws": draws,
        "rounds": rounds,
        "load": os.getloadavg()[0],
    }


def compare(trees: list[str], draws: int, rounds: int) -> None:
    """Each tree in turn, `rounds` times, one child process per (round, tree). The floor is the
    same numpy code whichever tree runs it, so the fastest floor of all children is every tree's
    floor; each tree's engine figure is its fastest round."""
    engines: dict[str, list[float]] = {tree: [] for tree in trees}
    floors: list[float] = []
    kernel_floors: dict[str, list[float]] = {tree: [] for tree in trees}
    for _ in range(rounds):
        for tree in trees:
            env = {**os.environ, "PYTHONPATH": tree}
            out = subprocess.run(
                [sys.executable, __file__, "--draws", str(draws), "--rounds", "4", "--json"],
                env=env, capture_output=True, text=True, check=True,
            )  # fmt: skip
            result = json.loads(out.stdout.strip().splitlines()[-1])
            engines[tree] += result["engines"]
            floors += result["floors"]
            kernel_floors[tree] += [f for f in result.get("kernel_floors", []) if f]
    floor = max(floors)
    print(f"floor (raw Philox words, fastest of {len(floors)} rounds): {floor:,.0f} cand/CPU-s")
    for tree in trees:
        best = max(engines[tree])
        print(
            f"{tree}: engine {best:,.0f} cand/CPU-s (fastest of {len(engines[tree])} rounds), "
            f"{best / floor:.1%} of the floor"
        )
        if kernel_floors[tree]:
            kernel = max(kernel_floors[tree])
            print(
                f"{tree}: compiled kernel's own floor {kernel:,.0f} cand/CPU-s "
                f"({kernel / floor:.2f}x numpy's words), engine {best / kernel:.1%} of it"
            )
    if len(trees) == 2:
        old, new = (max(engines[t]) for t in trees)
        print(f"engine {trees[1]} / {trees[0]}: {new / old:.2f}x")
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--draws", type=int, default=1024, help="draws per round (2 candidates each)"
    )
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--trees", nargs="+", help="compare these source trees (PYTHONPATH)")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args()
    if args.trees:
        compare(args.trees, args.draws, args.rounds)
        return
    result = measure(args.draws, args.rounds)
    if args.json:
        print(json.dumps(result))
        return
    if any(result["kernel_floors"]):
        kernel = max(result["kernel_floors"])
        share = result["engine"] / kernel
        print(f"compiled kernel's floor {kernel:,.0f} cand/CPU-s: engine {share:.1%} of it")
    print(
        f"floor {result['floor']:,.0f} cand/CPU-s (raw Philox words), engine "
        f"{result['engine']:,.0f} cand/CPU-s: {result['fraction']:.1%} of the floor "
        f"(one thread, best of {args.rounds}, {args.draws} draws; load {result['load']:.2f})"
    )


if __name__ == "__main__":
    main()
