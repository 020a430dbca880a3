"""The plugin-API issue's step-owning cases, as a plugin author meets them: before/after evidence.

Run (any benchsuite checkout on PYTHONPATH; needs `pytorch-optimizer` and `schedulefree`, which
are not dependencies of benchsuite; a case whose package is missing is skipped):
    PYTHONPATH=. OMP_NUM_THREADS=1 .venv/bin/python benchmarks/step_owning_cases.py

Task: Fashion-MNIST T-shirt/top vs sneaker, N = 16, training-set seed 200 (benchmarks/conftest.py),
the paper MLP at width 1 with biases, batch 2, 60 epochs (480 steps), 10 networks from seed 0:
one cell's training. Each case wraps the package's optimizer in an OptimizerSpec as its README
would have it, trains through benchsuite's train_networks, and compares with the loop the
package documents, on one nn.Module per network.
- SAM (pytorch_optimizer.SAM over SGD): max |weight difference| to the documented loop.
- AdamWScheduleFree: whether it runs, and whether the weights returned are its eval() weights.
- Prodigy declared elementwise (wrongly): stacked vs one network at a time.
- benchsuite's built-in `sam` (stacked) against a textbook SAM loop (when the checkout has it).
"""

from __future__ import annotations

import copy
import dataclasses
import sys

import torch
import torch.nn.functional as F

from benchsuite.engine.batches import round_orders
from benchsuite.engine.training import initial_parameters, train_networks
from benchsuite.plugins import default_registry
from benchsuite.records import Hyperparameter, OptimizerSpec, PriorSpec, kaiming_uniform_bound
from benchsuite.suite import build_module
from benchsuite.tasks import build_task, load_splits

NETWORKS, EPOCHS, BATCH, SEED = 10, 60, 2, 0
KAIMING = PriorSpec(name="kaiming-uniform", family="uniform", scale=kaiming_uniform_bound)
HAS_CLOSURE_FIELD = "uses_closure" in {f.name for f in dataclasses.fields(OptimizerSpec)}


def spec(name, factory, hyperparameters, elementwise=False, uses_closure=False):
    """An OptimizerSpec as a plugin author writes it; `uses_closure` only where the field exists."""
    extra = {"uses_closure": uses_closure} if HAS_CLOSURE_FIELD and uses_closure else {}
    declared = {key: Hyperparameter(type(value), value) for key, value in hyperparameters.items()}
    return OptimizerSpec(
        name=name, factory=factory, hyperparameters=declared, elementwise=elementwise, **extra
    )


def setup():
    registry = default_registry()
    dataset = registry.dataset("fashion-mnist")
    task = build_task(dataset, load_splits(dataset), (0, 7), 16, 200)
    module = build_module(registry.architecture("mlp"), task.input_shape, 1, None, True)
    parameters, buffers = initial_parameters(module, KAIMING, SEED, range(NETWORKS), "cpu")
    orders = round_orders(SEED, range(NETWORKS), 16, EPOCHS, "independent")
    return module, task.x_train, task.y_train.long(), parameters, buffers, orders


def plain(module, parameters, k):
    network = copy.deepcopy(module).train()
    with torch.no_grad():
        for name, value in network.named_parameters():
            value.copy_(parameters[name][k])
    return network


def batches(orders, k):
    for epoch_order in orders[k]:
        for start in range(0, len(epoch_order), BATCH):
            yield epoch_order[start : start + BATCH]


def max_difference(trained, networks) -> float:
    return max(
        (trained[name][k] - value.detach()).abs().max().item()
        for k, network in enumerate(networks)
        for name, value in network.named_parameters()
    )


def host(module, x, y, optimizer, parameters, buffers, orders, **options):
    try:
        trained, _ = train_networks(
            module, x, y, optimizer, optimizer.defaults, parameters, buffers, orders, BATCH,
            **options,
        )  # fmt: skip
        return trained, None
    except Exception as error:  # noqa: BLE001 - the evidence is the error itself
        return None, f"{type(error).__name__}: {' '.join(str(error).split())[:160]}"


def sam_case(module, x, y, parameters, buffers, orders) -> None:
    try:
        import pytorch_optimizer
    except ImportError:
        print("SAM (pytorch-optimizer): skipped, package not installed")
        return

    def factory(params, lr, rho):
        return pytorch_optimizer.SAM(params, torch.optim.SGD, rho=rho, lr=lr)

    optimizer = spec("po-sam", factory, {"lr": 0.01, "rho": 0.05}, uses_closure=True)
    trained, error = host(module, x, y, optimizer, parameters, buffers, orders)
    references = []
    for k in range(NETWORKS):
        network = plain(module, parameters, k)
        sam = factory(network.parameters(), lr=0.01, rho=0.05)
        for indices in batches(orders, k):  # pytorch_optimizer.SAM's docstring

            def closure(indices=indices, network=network, sam=sam):
                sam.zero_grad()
                loss = F.cross_entropy(network(x[indices]), y[indices])
                loss.backward()
                return loss

            sam.zero_grad()
            closure()
            sam.step(closure)
        references.append(network)
    if error:
        print(f"SAM (pytorch-optimizer): failed: {error}")
    else:
        difference = max_difference(trained, references)
        print(f"SAM (pytorch-optimizer): max |w_host - w_documented_loop| = {difference:.3g}")


def schedule_free_case(module, x, y, parameters, buffers, orders) -> None:
    try:
        import schedulefree
    except ImportError:
        print("AdamWScheduleFree: skipped, package not installed")
        return

    def factory(params, lr):
        return schedulefree.AdamWScheduleFree(params, lr=lr)

    optimizer = spec("sf-adamw", factory, {"lr": 0.0025})
    trained, error = host(module, x, y, optimizer, parameters, buffers, orders)
    if error:
        print(f"AdamWScheduleFree: failed: {error}")
        return
    at_eval, at_train = [], []
    for k in range(NETWORKS):
        network = plain(module, parameters, k)
        sf = factory(network.parameters(), lr=0.0025)
        sf.train()
        for indices in batches(orders, k):
            sf.zero_grad()
            F.cross_entropy(network(x[indices]), y[indices]).backward()
            sf.step()
        at_train.append(copy.deepcopy(network))
        sf.eval()
        at_eval.append(network)
    print(
        f"AdamWScheduleFree: ran; max |w_host - w_eval| = {max_difference(trained, at_eval):.3g}, "
        f"max |w_host - w_train| = {max_difference(trained, at_train):.3g}"
    )


def prodigy_case(module, x, y, parameters, buffers, orders) -> None:
    try:
        from pytorch_optimizer import Prodigy
    except ImportError:
        print("Prodigy: skipped, pytorch-optimizer not installed")
        return
    wrong = spec("prodigy", Prodigy, {"lr": 1.0}, elementwise=True)
    right = spec("prodigy", Prodigy, {"lr": 1.0}, elementwise=False)
    stacked, error = host(module, x, y, wrong, parameters, buffers, orders)
    alone, error_alone = host(module, x, y, right, parameters, buffers, orders)
    if error or error_alone:
        print(f"Prodigy: failed: {error or error_alone}")
        return
    difference = max((stacked[n] - alone[n]).abs().max().item() for n in stacked)
    print(f"Prodigy declared elementwise: max |w_stacked - w_per_network| = {difference:.3g}")


def builtin_sam_case(module, x, y, parameters, buffers, orders) -> None:
    registry = default_registry()
    if "sam" not in registry.names("optimizer"):
        print("built-in sam: not in this checkout")
        return
    from benchsuite.engine.batches import optimizer_seed

    optimizer = registry.optimizer("sam")  # its defaults: lr 0.01, momentum 0, rho 0.05
    trained, error = host(
        module, x, y, optimizer, parameters, buffers, orders,
        seeds=[optimizer_seed(SEED, a) for a in range(NETWORKS)],
    )  # fmt: skip
    references = []
    for k in range(NETWORKS):
        network = plain(module, parameters, k)
        tensors = list(network.parameters())
        sgd = torch.optim.SGD(tensors, lr=0.01)
        for indices in batches(orders, k):  # Foret et al.'s two passes, as davda54/sam writes them
            sgd.zero_grad()
            F.cross_entropy(network(x[indices]), y[indices]).backward()
            norm = torch.norm(torch.stack([p.grad.norm(p=2) for p in tensors]), p=2)
            with torch.no_grad():
                old = [p.clone() for p in tensors]
                for p in tensors:
                    p.add_(p.grad * (0.05 / (norm + 1e-12)))
            sgd.zero_grad()
            F.cross_entropy(network(x[indices]), y[indices]).backward()
            with torch.no_grad():
                for p, o in zip(tensors, old):
                    p.copy_(o)
            sgd.step()
        references.append(network)
    if error:
        print(f"built-in sam: failed: {error}")
    else:
        difference = max_difference(trained, references)
        print(
            f"built-in sam (stacked, {NETWORKS} networks): max |w - w_textbook| = {difference:.3g}"
        )


def main() -> int:
    torch.set_num_threads(1)
    state = setup()
    for case in (sam_case, schedule_free_case, prodigy_case, builtin_sam_case):
        case(*state)
    return 0


if __name__ == "__main__":
    sys.exit(main())
