"""The Lipschitz estimate's input-gradient norms for the LeNet family, three ways in one process,
alternating within rounds, each on one thread: the vmapped autograd path, the written-out
sequential backward (metrics/input_gradients.py, one network at a time; what runs without the
compiled kernel) and the compiled kernel (engine.stacked_conv.native_margin_norms, one worker).
ResNet4 (eval mode, running statistics as a trained network's) two ways: vmap and its compiled
kernel (engine.stacked_resnet.native_resnet_margin_norms); the ratio is vmap / compiled.

Run (not part of the test run):
    PYTHONPATH=. .venv/bin/python benchmarks/lipschitz_speed.py [--networks 16] [--rounds 3]
        [--images 2000] [--family lenet|mlp|resnet4]

Task: `networks` networks drawn with engine.training.initial_parameters (Kaiming-uniform, biases)
on 2,000 Fashion-MNIST-shaped 28x28 images (uniform random pixels). Each figure is the fastest
of `rounds` rounds; the ratios are vmap / written-out and written-out / compiled; the largest
relative difference of each against vmap's norms is printed too.
"""

from __future__ import annotations

import argparse
import time

import torch

from benchsuite.architectures.lenet import build_lenet
from benchsuite.architectures.mlp import build_mlp
from benchsuite.engine import native
from benchsuite.architectures.resnet4 import build_resnet4
from benchsuite.engine.stacked_conv import native_margin_norms
from benchsuite.engine.stacked_resnet import native_resnet_margin_norms
from benchsuite.engine.training import initial_parameters
from benchsuite.metrics import normalized
from benchsuite.records import PriorSpec, kaiming_uniform_bound

KAIMING = PriorSpec(name="kaiming-uniform", family="uniform", scale=kaiming_uniform_bound)
CASES = [
    ("lenet", "1/6", "2c-3f"), ("lenet", "2/6", "2c-3f"), ("lenet", "3/6", "2c-3f"),
    ("lenet", "1", "2c-3f"), ("lenet", "2/6", "1c-1f"), ("lenet", "2/6", "2c-1f"),
    ("lenet", "2/6", "2c-2f"), ("lenet", "1/6", "2c-1f"), ("mlp", "1", None),
    ("resnet4", "1/6", "full"), ("resnet4", "1/2", "full"), ("resnet4", "1", "full"),
    ("resnet4", "1/2", "layer3"),
]  # fmt: skip


def timed(function):
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def measured(module, parameters, buffers, x, rounds: int):
    """Fastest time of each side over `rounds` alternating rounds, and its last result."""
    sides = {
        "vmap": lambda: normalized.vmapped_gradient_norms(module, parameters, buffers, x, 32, 512),
        "written-out": lambda: _switched_off(
            lambda: normalized.input_gradient_norms(module, parameters, buffers, x)
        ),
        "compiled": lambda: native_margin_norms(module, parameters, x, workers=1),
    }
    if buffers:  # ResNet4: no written-out path
        sides.pop("written-out")
        sides["compiled"] = lambda: native_resnet_margin_norms(
            module, parameters, buffers, x, workers=1
        )
    best, results = dict.fromkeys(sides, float("inf")), {}
    for _ in range(rounds):
        for name, side in sides.items():
            seconds, results[name] = timed(side)
            best[name] = min(best[name], seconds)
    return best, results


def _switched_off(function):
    with native.switched_off():
        return function()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--networks", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--family", choices=["lenet", "mlp", "resnet4"], help="only these cases")
    args = parser.parse_args()
    torch.set_num_threads(1)
    x = torch.rand(args.images, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    for family, width, depth in CASES:
        if args.family and family != args.family:
            continue
        if family == "mlp":
            module = build_mlp((1, 28, 28), width=width, bias=True)
        elif family == "resnet4":
            module = build_resnet4((1, 28, 28), width=width, depth=depth)
        else:
            module = build_lenet((1, 28, 28), width=width, depth=depth, bias=True)
        p, b = initial_parameters(module, KAIMING, 0, range(args.networks), "cpu")
        generator = torch.Generator().manual_seed(1)
        for key, value in b.items():  # running statistics as a trained network's
            if key.endswith("running_mean"):
                b[key] = value + 0.3 * torch.randn(value.shape, generator=generator)
            elif key.endswith("running_var"):
                b[key] = value * (0.5 + torch.rand(value.shape, generator=generator))
        best, results = measured(module, p, b, x, args.rounds)
        if results["compiled"] is None:  # the MLP, or no compiler here
            best.pop("compiled"), results.pop("compiled")
        vmap = results["vmap"]
        differences = {
            name: float(((norms - vmap).abs() / vmap.abs().clamp_min(1e-30)).max())
            for name, norms in results.items() if name != "vmap"
        }  # fmt: skip
        line = f"{family} w={width} {depth or ''}: " + "  ".join(
            f"{name} {seconds:.2f}s" for name, seconds in best.items()
        )
        if "written-out" in best:
            line += f"  vmap/written-out {best['vmap'] / best['written-out']:.2f}x"
        else:
            line += f"  vmap/compiled {best['vmap'] / best['compiled']:.2f}x"
        if "compiled" in best and "written-out" in best:
            line += f"  written-out/compiled {best['written-out'] / best['compiled']:.2f}x"
        line += "  max rel diff " + ", ".join(f"{n} {d:.1e}" for n, d in differences.items())
        print(line, flush=True)


if __name__ == "__main__":
    main()
