"""Cost per effective independent interpolator: subset simulation (subset-mcmc) against Guess &
Check, measured in one run on the same cells, so that the ratio survives a loaded machine.

G&C's interpolators are independent draws: its cost per effective one is its time per network.
Subset simulation's final particles are correlated within a repeat; its effective number is the
repeat ESS of their test accuracy (statistics.repeat_ess over all final particles) or, for the
P(fit) estimate, ess_p_fit. Both samplers see the same training set, module and prior.

    PYTHONPATH=. python benchmarks/subset_cost.py --dataset digits --classes 3 8 --n 16 24 32
    PYTHONPATH=. python benchmarks/subset_cost.py --dataset fashion-mnist --classes 7 0
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from benchsuite.architectures.build import build_module
from benchsuite.plugins import load_registry
from benchsuite.records import DataOptions, SamplingRequest
from benchsuite.stacked import accuracy
from benchsuite.statistics import repeat_ess
from benchsuite.tasks import TaskCache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--classes", type=int, nargs=2, default=(3, 8))
    parser.add_argument("--n", type=int, nargs="+", default=(16, 24, 32))
    parser.add_argument("--architecture", default="mlp")
    parser.add_argument("--width", default="1/6")
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--seed", type=int, default=200, help="training-set seed")
    parser.add_argument("--gnc-networks", type=int, default=200)
    parser.add_argument("--gnc-candidates", type=float, default=3e7, help="G&C stops here if short")
    parser.add_argument("--particles", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--moves", type=int, default=24)
    parser.add_argument("--final-moves", type=int, default=48)
    args = parser.parse_args()
    torch.set_num_threads(1)
    registry = load_registry(include_entry_points=False)
    spec = registry.dataset(args.dataset)
    cache, cpu = TaskCache(), torch.device("cpu")
    uniform = registry.prior("uniform")
    print(f"{args.dataset} {args.classes[0]} vs {args.classes[1]}, {args.architecture} width {args.width} "
          f"depth {args.depth}, training set {args.seed}; subset-mcmc {args.repeats} x {args.particles} "
          f"particles, moves {args.moves}/{args.final_moves}")
    print("| N | G&C -log2 P | G&C s/network | subset -log2 P ± se | subset s | ESS test acc | ESS P "
          "| subset s/ESS | cost ratio subset/G&C | acc G&C | acc subset |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in args.n:
        task = cache.get(spec, DataOptions(), tuple(args.classes), n, args.seed, cpu)
        module = build_module(
            registry.architecture(args.architecture), task.input_shape, args.width, args.depth, False
        )

        def request(target, options, budget=10**12, module=module, task=task, n=n):
            return SamplingRequest(
                module=module, x_train=task.x_train, y_train=task.y_train, prior=uniform,
                target=target, max_candidates=int(budget), seed=n, device=cpu, options=options,
            )  # fmt: skip

        started = time.perf_counter()
        gnc = registry.sampler("gnc").sample(request(args.gnc_networks, {"cpu_threads": 1}, args.gnc_candidates))
        gnc_seconds = time.perf_counter() - started
        options = {
            "particles": args.particles, "repeats": args.repeats,
            "moves": args.moves, "final_moves": args.final_moves,
        }  # fmt: skip
        started = time.perf_counter()
        sub = registry.sampler("subset-mcmc").sample(request(args.particles * args.repeats, options))
        sub_seconds = time.perf_counter() - started
        if gnc.size == 0:
            print(f"| {n} | > {math.log2(gnc.candidates_tried):.1f} | > {gnc_seconds:.0f} | (G&C found none) |")
            continue
        gnc_acc = accuracy(module, gnc.parameters, gnc.buffers, task.x_test, task.y_test)
        sub_acc = accuracy(module, sub.parameters, sub.buffers, task.x_test, task.y_test)
        by_repeat = [sub_acc[sub.chains == r].tolist() for r in range(args.repeats)]
        ess = repeat_ess(by_repeat) or float("nan")
        e = sub.estimates
        per_gnc = gnc_seconds / max(1, gnc.size)
        per_sub = sub_seconds / ess
        print(
            f"| {n} | {-math.log2(gnc.size / gnc.candidates_tried):.2f} ({gnc.size}) | {per_gnc:.4f} "
            f"| {e['neg_log2_p_fit']:.2f} ± {e.get('neg_log2_p_fit_se', float('nan')):.2f} | {sub_seconds:.1f} "
            f"| {ess:.0f} | {e.get('ess_p_fit', float('nan')):.0f} | {per_sub:.4f} | {per_sub / per_gnc:.2f} "
            f"| {100 * float(gnc_acc.mean()):.1f} | {100 * float(sub_acc.mean()):.1f} |",
            flush=True,
        )
        print(f"    diagnostics: rhat_neg_log2_p {e.get('rhat_neg_log2_p', float('nan')):.2f}, "
              f"acceptance_min {e.get('acceptance_min', float('nan')):.2f}, levels {e.get('levels', 0):.1f}, "
              f"evaluations {e['evaluations']:.0f}; G&C candidates {gnc.candidates_tried}; networks evaluated per "
              f"effective interpolator, subset / G&C: {e['evaluations'] / ess / (gnc.candidates_tried / gnc.size):.2f} "
              "(free of the load, blind to a G&C candidate being cheaper)", flush=True)


if __name__ == "__main__":
    main()
