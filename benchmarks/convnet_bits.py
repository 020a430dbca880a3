"""Whether a change to engine/convnet.c kept the bits: save the trained parameters of LeNet-family
networks and the Lipschitz metric's input-gradient norms of the trained networks before the
change, check them after (a speed-only change must pass; one that fails needs a new
engine.NUMERICS_REVISION).

Run (not part of the test run), from the repository root:
    PYTHONPATH=. .venv/bin/python benchmarks/convnet_bits.py save bits.pt     # before the change
    PYTHONPATH=. .venv/bin/python benchmarks/convnet_bits.py check bits.pt    # after it

Each side builds its own library (engine/native.py keys the cache by the sources). Networks: LeNet
28x28 at widths 1/6, 2/6 and 1, depths 1c-1f, 2c-1f and 2c-3f, with and without biases; 32x32x3
at 1/6, 2/6 and 1; a network with odd sizes and a 3x4 kernel; one with a row width past a
multiple of eight. Four networks of each, 3 epochs of SGD at batch 2 on 8 noise images whose top
rows are exact zeros (ReLU and pool ties). ResNet4 (the BatchNorm entry points) at 28x28 widths
1/6, 1/2 and 1 and at 32x32x3 width 1/2 (layer2-3): its trained parameters and running
statistics, then the trained networks' eval logits and margin norms. Exit status 1 lists the
tensors that differ (a file saved before a case existed checks the tensors it has).
"""

from __future__ import annotations

import sys

import torch
from torch import nn

from benchsuite.architectures.lenet import build_lenet
from benchsuite.architectures.resnet4 import build_resnet4
from benchsuite.builtins.optimizers import benchsuite_optimizers
from benchsuite.engine import native
from benchsuite.engine.batches import round_orders
from benchsuite.engine.stacked_conv import native_margin_norms, native_ops, plan_conv
from benchsuite.engine.stacked_mlp import flat_views
from benchsuite.engine.stacked_resnet import native_resnet_logits, native_resnet_margin_norms
from benchsuite.engine.training import initial_parameters, train_networks
from benchsuite.records import PriorSpec, kaiming_uniform_bound

SGD = next(spec for spec in benchsuite_optimizers() if spec.name == "sgd")
KAIMING = PriorSpec(name="kaiming-uniform", family="uniform", scale=kaiming_uniform_bound)


def odd():
    return nn.Sequential(
        nn.Conv2d(2, 3, (3, 4), bias=False), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(3, 4, 3), nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(),
        nn.Linear(4 * 3 * 3, 7), nn.ReLU(), nn.Linear(7, 5), nn.ReLU(), nn.Linear(5, 3),
    )  # fmt: skip


def wide():
    return nn.Sequential(
        nn.Conv2d(1, 3, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(3 * 13 * 17, 2)
    )  # fmt: skip


def cases():
    for width in ("1/6", "2/6", 1):
        for depth in ("1c-1f", "2c-1f", "2c-3f"):
            for bias in (False, True):
                yield (
                    f"lenet-{width}-{depth}-{'bias' if bias else 'nobias'}",
                    lambda w=width, d=depth, b=bias: build_lenet((1, 28, 28), w, depth=d, bias=b),
                    (1, 28, 28), 2,
                )  # fmt: skip
    for width in ("1/6", "2/6", 1):
        yield f"32x32x3-{width}", lambda w=width: build_lenet((3, 32, 32), w), (3, 32, 32), 2
    yield "odd", odd, (2, 19, 21), 3
    yield "wide", wide, (1, 28, 36), 2


def trained() -> dict[str, torch.Tensor]:
    torch.set_num_threads(1)
    if native.library() is None:
        sys.exit("no compiled kernel here (engine/native.py): nothing to compare")
    out = {}
    for name, make, shape, classes in cases():
        module = make()
        params = flat_views(initial_parameters(module, KAIMING, 1, range(2), "cpu")[0])[1]
        if native_ops(plan_conv(module), params, params, shape) is None:
            print(f"{name}: left out (the kernel does not take it here)")
            continue
        x = torch.randn(8, *shape, generator=torch.Generator().manual_seed(5))
        x[:, :, :3] = 0.0
        y = torch.arange(8) % classes
        parameters, buffers = initial_parameters(module, KAIMING, 1, range(4), "cpu")
        orders = round_orders(2, range(4), 8, 3, "independent")
        result, _ = train_networks(
            module, x, y, SGD, {"lr": 0.05}, parameters, buffers, orders, 2, path="conv"
        )  # fmt: skip
        out.update({f"{name}/{key}": value.clone() for key, value in result.items()})
        norms = native_margin_norms(module, result, x) if classes == 2 else None
        if norms is not None:  # the Lipschitz metric's input gradients: the kernel's other user
            out[f"{name}/margin_norms"] = norms
    return out | resnets()


def resnets() -> dict[str, torch.Tensor]:
    out = {}
    for shape, width, depth in [
        ((1, 28, 28), "1/6", "full"), ((1, 28, 28), "1/2", "full"), ((1, 28, 28), 1, "full"),
        ((3, 32, 32), "1/2", "layer2-3"),
    ]:  # fmt: skip
        name = f"resnet4-{shape[-1]}-{width}-{depth}"
        module = build_resnet4(shape, width, depth=depth)
        x = torch.randn(8, *shape, generator=torch.Generator().manual_seed(5))
        x[:, :, :3] = 0.0
        y = torch.arange(8) % 2
        parameters, buffers = initial_parameters(module, KAIMING, 1, range(4), "cpu")
        orders = round_orders(2, range(4), 8, 3, "independent")
        result, statistics = train_networks(
            module, x, y, SGD, {"lr": 0.05}, parameters, buffers, orders, 2, path="resnet"
        )  # fmt: skip
        tested = {
            "logits": native_resnet_logits(module, result, statistics, x),
            "margin_norms": native_resnet_margin_norms(module, result, statistics, x),
        }
        for key, value in {**result, **statistics, **tested}.items():
            out[f"{name}/{key}"] = value.clone()
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in {"save", "check"}:
        print(__doc__.split("\n\n")[1])
        return 2
    mode, path = argv
    got = trained()
    if mode == "save":
        torch.save(got, path)
        print(f"saved {len(got)} tensors to {path}")
        return 0
    saved = torch.load(path)
    def same(key):
        bits = torch.int64 if saved[key].dtype == torch.float64 else torch.int32
        return saved[key].dtype == got[key].dtype and torch.equal(
            saved[key].view(bits), got[key].view(bits)
        )

    differ = [key for key in saved if key in got and not same(key)]
    verdict = f"{len(differ)} differ: {differ[:8]}" if differ else "identical"
    print(f"checked {sum(key in got for key in saved)} of {len(saved)} saved tensors: {verdict}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
