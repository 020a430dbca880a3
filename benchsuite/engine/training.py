"""Many-model gradient training: the networks of a round train together in one set of kernels.

The protocol's gradient baseline (protocol.md, "The gradient baseline"): init from the prior (weights
i.i.d., biases zero), mean cross-entropy per network, mini-batches of B reshuffled every epoch (the
last one partial when N % B != 0, as a DataLoader with drop_last=False), a fixed number of epochs,
no early stopping; keep the networks with 100% training accuracy (ties wrong) and train more rounds
until `target` are found or the budget is spent.

Why stacked: one network with batch size 2 keeps no core busy; K networks with a leading model axis
do the same arithmetic in the same number of kernel launches. The loss is the sum over networks of
each network's mean cross-entropy, so each network's gradient is its own. For elementwise
optimizers (OptimizerSpec.elementwise) one torch.optim over the stacked tensors is exactly K
independent optimizers; stack-aware ones (OptimizerSpec.stacked: sam, sgld) are written to keep
the networks of a stack apart; other optimizers train one network at a time (correctness first).
Every path calls the optimizer the same way (engine/stepping.py, docs/optimizer-contract.md):
gradient of the current batch, then step(closure) or step(), the schedule's learning rate, and
the optimizer's train()/eval() around the steps; an optimizer that fails on numbers (NaN or inf,
a LinAlgError) loses only the networks it failed on, on every path (engine/divergence.py).

Populations of several cells (train_populations) with the same MLP, optimizer, N and schedule but
different training sets and seeds train their rounds in one stack, each network on its own
cell's points: every population equals the one train_population gives it alone (tests).

The paths, the same semantics:
- "mlp": Sequential of Linear/ReLU after a parameter-free prefix (MaxPool2d, Flatten): hand-written
  batched forward and backward (engine/stacked_mlp.py) on one flat parameter buffer, stepped by
  SGD/Adam written out in torch.optim's kernels (engine/stacked_optim.py), the fastest;
- "conv": Sequential of Conv2d/ReLU/MaxPool2d, Flatten, Linear/ReLU (the LeNet family): hand-written
  batched forward and backward over the stack (engine/stacked_conv.py: convolutions as patches
  times kernels in bmm), the flat buffer and written-out optimizers of "mlp"; 2-2.5x the vmap
  path on LeNet (docs/performance.md);
- "resnet": the conv-stage ops plus BatchNorm2d in train mode, residual blocks, a global max pool
  and a Linear head (ResNet4 at every depth): hand-written as "conv" is (engine/stacked_resnet.py),
  running statistics updated as StackableBatchNorm2d does; the buffers come back trained;
- "vmap": any module, torch.func.functional_call under vmap plus autograd;
- "per_network_stacked": for optimizers neither elementwise nor stack-aware (LAMB, Shampoo, Muon:
  they couple a network's entries) on the "mlp" and "conv" networks: the stack's forward and
  backward as there, then one optimizer per network over its slices of the stacked tensors
  (stacked_mlp.NetworkSteppers); 1.3-3x "per_network"'s speed on the MLP, 2.7-5.5x on LeNet;
- "per_network": one plain module and one optimizer per network (other networks, and optimizers
  whose step needs a closure), networks spread over worker threads with single-threaded kernels.
On CPU the rounds of torch.optim's elementwise optimizers train as sub-stacks over worker threads
(engine/parts.py), every kernel on one thread (engine/threads.py).

What "bit-identical" covers (tests/test_training.py), on one device:
- a network trained in a stack of K has exactly (torch.equal) the parameters it gets trained alone
  (K = 1) from the same init and batch order, on the "mlp", "per_network_stacked" (also for LeNet:
  tests/test_per_network_stacked.py) and "per_network" paths and for all
  built-in optimizers (sam and sgld: tests/test_optimizer_contract.py); bmm, elementwise kernels
  and elementwise optimizers compute each network by itself; also on "conv" for unit-stride
  unpadded convolutions (the LeNet family: patches x kernels in bmm). Not so on the "vmap" path for
  convolutional networks: oneDNN picks its grouped-convolution algorithm by the number of
  networks, and a LeNet alone (or 2-3 of them with 3-channel layers) gets other bits than in a
  stack of 8 (measured, torch 2.14); engine/parts.py splits those rounds by size alone. "conv"
  and "vmap" agree to float32 rounding and accepted the same networks on the test fixtures
  (tests/test_stacked_conv.py);
- the number of worker threads does not matter (kernels run on one thread each, engine/threads.py;
  rounds split into sub-stacks as engine/parts.py says);
- against the plain way (its own nn.Module, autograd, F.cross_entropy, its own torch.optim) it is
  exact whenever PyTorch runs the same GEMM kernel for the batched product (bmm) and the single
  one (mm). On CPU that holds for products of at least 400 multiply-adds; below that bmm loops
  naively while mm calls MKL, so with a tiny layer (the paper MLP's 12 -> 2 output) the two differ
  in the last bit of that layer's outputs (the tests check an MLP with only larger products for
  exact equality, and a paper-like one for agreement to rounding).
On GPUs cuBLAS may choose kernels by batch count, so there stacking may change the rounding.

Regeneration: network `a` (its attempt index, Population.found_at) starts from
init_stacked(module, prior, [init_seed(seed, a)], device) and, with independent batch orders,
sees network_orders(seed, a, N, epochs); so any accepted network can be retrained from (seed, a)
alone (regenerate()), and the population does not depend on networks_per_round.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from benchsuite.engine.batches import (
    batch_indices,
    init_seed,
    network_orders,
    optimizer_seed,
    round_orders,
    shared_orders,
    steps_per_epoch,
)
from benchsuite.engine.divergence import blew_up, note_blown_up, train_losing_diverged
from benchsuite.engine.evaluation import accuracy
from benchsuite.engine.gemm_check import warn_unless_invariant
from benchsuite.engine.parts import CHOICE, joined, round_parts
from benchsuite.engine.stacked_conv import plan_conv, train_stacked_conv
from benchsuite.engine.stacked_mlp import (
    PerNetworkOnly,
    flat_optimizer_ok,
    input_features,
    plan_mlp,
    train_stacked_mlp,
)
from benchsuite.engine.stacked_optim import direct_optimizer_for
from benchsuite.engine.stacked_resnet import plan_resnet, train_stacked_resnet
from benchsuite.engine.stepping import Stepper, build_optimizer
from benchsuite.engine.threads import (
    cpu_threads,
    one_cpu_thread,
    spread,
    torch_single_threaded,
    worker_pool,
)
from benchsuite.errors import OptimizerStepError
from benchsuite.protocol import (
    BATCH_ORDERS,
    DEFAULT_BATCH_ORDER,
    DEFAULT_BATCH_SIZE,
    DEFAULT_BUDGET_PER_TARGET,
    DEFAULT_EPOCHS,
    DEFAULT_TIE_RULE,
)
from benchsuite.records import Networks, OptimizerSpec, Population, PriorSpec
from benchsuite.schedules import Schedule
from benchsuite.stacked import StackedForward, init_stacked

TRAINING_PATHS = ("auto", "mlp", "conv", "resnet", "vmap", "per_network_stacked", "per_network")
# CPU rounds: parameters + gradients of a round should stay in the last-level cache. Measured on
# the 2-core EPYC (benchmarks/test_bench_training.py, SGD, batch 2): the paper MLP at width 1
# (132 KB of weights) ran at 110k network-steps/s with 50-64 networks per round and 83k with 100;
# at width 1/6 best near 400 (630k/s; 576k at 512). LeNet width 1/6 (vmap path) peaked near 256.
CPU_ROUND_BYTES = 13 * 2**20
CPU_NETWORKS_PER_ROUND = (8, 384)  # bounds: fewer leave per-step overhead unamortised
GPU_NETWORKS_PER_ROUND = 4096
GPU_MEMORY_FRACTION = 0.5  # of free device memory a round may use
# The earlier per-step loop of the "mlp" path (one gather per step, one optimizer tensor per
# parameter); the same results, kept as the reference benchmarks compare against (per_step_path()).
PER_STEP_REFERENCE = False
# Populations trained together (train_populations) size rounds after the first at this many times
# what the acceptance rate so far asks for, so that few need a third round: every round costs
# all its steps, and in a stack extra networks are cheap. Independent batch orders only (then
# which networks are kept does not depend on round sizes); networks past the last kept one are
# discarded, as they are in any round.
SPECULATION = 1.5
# The per-network path keeps its worker threads when a wave of them trains networks at least this
# much faster per network than one thread alone (_spread).
PARALLEL_MARGIN = 0.9


@dataclass(frozen=True)
class TrainingSettings:
    """How each network trains (the protocol's knobs) and how many train at once (the engine's).

    batch_order "independent": every network draws its own reshuffle each epoch (independent runs);
    "shared": all networks of a round see one mini-batch sequence, as the reference code does by
    repeating the batch across networks; this correlates the networks of a round.
    networks_per_round: networks trained stacked at once. An integer R: every round trains R
    (the last may be cut by the budget), so round starts are multiples of R. "auto": sized for the
    device and for the acceptance rate seen so far (rounds then vary).
    max_networks: the budget, networks trained at most (None: DEFAULT_BUDGET_PER_TARGET x target).
    tie_rule: how equal logits are decided when checking the fit (benchsuite.protocol.TIE_RULES).
    schedule: the learning-rate schedule (benchsuite.schedules); None is constant.
    """

    batch_size: int = DEFAULT_BATCH_SIZE
    epochs: int = DEFAULT_EPOCHS
    batch_order: str = DEFAULT_BATCH_ORDER
    networks_per_round: int | str = "auto"
    max_networks: int | None = None
    tie_rule: str = DEFAULT_TIE_RULE
    schedule: Schedule | None = None

    def __post_init__(self):
        if int(self.batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if int(self.epochs) < 0:
            raise ValueError(f"epochs must be at least 0, got {self.epochs}")
        if self.batch_order not in BATCH_ORDERS:
            raise ValueError(f"batch_order must be one of {BATCH_ORDERS}, got {self.batch_order!r}")
        if self.networks_per_round != "auto" and (
            isinstance(self.networks_per_round, str) or int(self.networks_per_round) < 1
        ):
            raise ValueError(
                f"networks_per_round must be 'auto' or at least 1, got {self.networks_per_round!r}"
            )
        if self.max_networks is not None and int(self.max_networks) < 0:
            raise ValueError(f"max_networks must be at least 0, got {self.max_networks}")


# ---------------------------------------------------------------------------------------------
# Initial state


def initial_parameters(
    module: nn.Module, prior: PriorSpec, seed: int, attempts, device
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Stacked initial parameters and buffers of networks `attempts` (each from init_seed(seed, a))."""
    return init_stacked(module, prior, [init_seed(seed, a) for a in attempts], device)


# ---------------------------------------------------------------------------------------------
# One round: K networks from given initial state and batch orders


def per_network_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[K] mean cross-entropy of each network over its own batch (logits [K, b, C], labels [K, b])."""
    count, batch = labels.shape
    losses = F.cross_entropy(
        logits.reshape(count * batch, -1), labels.reshape(-1), reduction="none"
    )
    return losses.view(count, batch).mean(dim=1)


def choose_path(module: nn.Module, optimizer: OptimizerSpec) -> str:
    """The fastest exact path for this module and optimizer (see the module docstring)."""
    if not (optimizer.elementwise or optimizer.stacked):
        stacked = plan_mlp(module) is not None or plan_conv(module) is not None
        return "per_network_stacked" if stacked and not optimizer.uses_closure else "per_network"
    if plan_mlp(module) is not None:
        return "mlp"
    if plan_conv(module) is not None:
        return "conv"
    return "resnet" if plan_resnet(module) is not None else "vmap"


def train_networks(
    module: nn.Module,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    optimizer: OptimizerSpec,
    hyperparameters: dict,
    parameters: dict[str, torch.Tensor],
    buffers: dict[str, torch.Tensor],
    orders: torch.Tensor,
    batch_size: int,
    path: str = "auto",
    *,
    seeds=None,
    schedule: Schedule | None = None,
    workers: int | str = "auto",
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Train K networks from stacked initial state; network k visits the points orders[k, e] in epoch e.

    The optimizer is called as OptimizerSpec's docstring says (docs/optimizer-contract.md).
    seeds: network k's seed for its optimizer's own random numbers (batches.optimizer_seed of its
    attempt); required for stack-aware optimizers (OptimizerSpec.stacked). schedule: the
    learning-rate schedule (None: constant). workers: threads the per-network path spreads the
    networks over on CPU ("auto": the CPUs this process may use), each running single-threaded
    kernels; the results do not depend on it.
    Returns the trained stacked (parameters, buffers), detached; the inputs are not modified.
    Raises OptimizerStepError when the optimizer fails, except where the numerics rule loses
    networks instead (engine/divergence.py): then they come back with NaN parameters, the others
    as a stack without them trains them.
    """

    def train(index: torch.Tensor | None):
        stack, state, order, chosen = parameters, buffers, orders, seeds
        if index is not None:  # networks `index` alone (the numerics rule)
            stack, state = _rows(parameters, index), _rows(buffers, index)
            order = orders[index.to(orders.device)]
            chosen = None if seeds is None else [list(seeds)[i] for i in index.tolist()]
        return _train_stack(
            module, x_train, y_train, optimizer, hyperparameters, stack, state, order, batch_size,
            path, seeds=chosen, schedule=schedule, workers=workers,
        )  # fmt: skip

    return train_losing_diverged(train, parameters, buffers)


def _rows(stacked: dict[str, torch.Tensor], index: torch.Tensor) -> dict[str, torch.Tensor]:
    """Networks `index` of a stack (a CPU index), copied."""
    return {name: value.index_select(0, index.to(value.device)) for name, value in stacked.items()}


def _train_stack(
    module: nn.Module,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    optimizer: OptimizerSpec,
    hyperparameters: dict,
    parameters: dict[str, torch.Tensor],
    buffers: dict[str, torch.Tensor],
    orders: torch.Tensor,
    batch_size: int,
    path: str = "auto",
    *,
    seeds=None,
    schedule: Schedule | None = None,
    workers: int | str = "auto",
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """train_networks for one stack: an optimizer's error stops it (train_networks' rule aside)."""
    if path not in TRAINING_PATHS:
        raise ValueError(f"path must be one of {TRAINING_PATHS}, got {path!r}")
    chosen_automatically = path == "auto"
    if chosen_automatically:
        path = choose_path(module, optimizer)
    if not path.startswith("per_network") and not (optimizer.elementwise or optimizer.stacked):
        raise ValueError(
            f"optimizer {optimizer.name!r} is not elementwise: only 'per_network_stacked' and "
            "'per_network' are exact"
        )
    if path.startswith("per_network") and optimizer.stacked and not optimizer.elementwise:
        raise ValueError(
            f"optimizer {optimizer.name!r} steps stacks of networks: train it on 'mlp' or 'vmap'"
        )
    count = next(iter(parameters.values())).shape[0] if parameters else 0
    steps = batch_indices(orders.to(x_train.device), batch_size)
    labels = y_train.long()
    device = x_train.device
    if path != "per_network":
        warn_unless_invariant(device)
    threads = cpu_threads(workers) if device.type == "cpu" else 1
    splittable = device.type == "cpu" and _splittable(optimizer)
    if not splittable:
        threads = 1  # one stack; the per-network path has its own workers (`workers`)

    def host(a: int, b: int):
        return _host(
            optimizer, hyperparameters, b - a, None if seeds is None else list(seeds)[a:b],
            schedule, len(steps), steps_per_epoch(int(orders.shape[-1]), batch_size),
        )  # fmt: skip

    was_training = module.training
    module.train()
    try:
        if path == "per_network_stacked":
            trained = _train_per_network_stacked(
                module, x_train, labels, parameters, steps, *host(0, count)
            )
            if trained is not None:
                return trained, {name: value.clone() for name, value in buffers.items()}
            if not chosen_automatically:
                raise ValueError(
                    "path 'per_network_stacked' needs an MLP or LeNet-family network and an "
                    "optimizer whose step takes no closure and updates its tensors in place"
                )
            path = "per_network"
        if path == "mlp":
            plan = plan_mlp(module)
            if plan is None:
                raise ValueError(
                    "path 'mlp' needs a Sequential of Linear/ReLU after a parameter-free prefix"
                )
            features = input_features(plan, x_train)
            if features is not None:
                trained = _train_mlp_parts(
                    plan, features, labels, parameters, steps, optimizer, hyperparameters, host,
                    threads, device,
                )  # fmt: skip
                return trained, {name: value.clone() for name, value in buffers.items()}
            if not chosen_automatically:
                raise ValueError(
                    "path 'mlp' needs the prefix (pooling, Flatten) to give [N, features]"
                )
            path = "vmap"  # e.g. Linear over the last axis of an image: the general path
        if path == "conv":
            plan = plan_conv(module)
            if plan is None:
                raise ValueError(
                    "path 'conv' needs a Sequential of Conv2d/ReLU/MaxPool2d, Flatten, Linear/ReLU"
                )

            def conv_part(a: int, b: int):
                return _train_conv(
                    plan, x_train, labels, _part(parameters, a, b), [s[a:b] for s in steps],
                    optimizer, hyperparameters, *host(a, b),
                )  # fmt: skip

            ranges = round_parts("conv", module, count, threads) if splittable else [(0, count)]
            results = spread(lambda r: conv_part(*r), ranges, threads, device)
            return joined(results), {name: value.clone() for name, value in buffers.items()}
        if path == "resnet":
            plan = plan_resnet(module)
            if plan is None:
                raise ValueError(
                    "path 'resnet' needs a Sequential of Conv2d/BatchNorm2d/ReLU/MaxPool2d/Residual, "
                    "GlobalMaxPool, Linear (ResNet4)"
                )

            def resnet_part(a: int, b: int):
                return _train_resnet(
                    plan, x_train, labels, _part(parameters, a, b), _part(buffers, a, b),
                    [s[a:b] for s in steps], optimizer, hyperparameters, *host(a, b),
                )  # fmt: skip

            # each network is computed by itself, so any split gives the same bits; the conv rule
            ranges = round_parts("conv", module, count, threads) if splittable else [(0, count)]
            results = spread(lambda r: resnet_part(*r), ranges, threads, device)
            return joined([r[0] for r in results]), joined([r[1] for r in results])
        if path == "vmap":

            def part(a: int, b: int):
                return _train_vmap(
                    copy.deepcopy(module), x_train, labels, _part(parameters, a, b),
                    _part(buffers, a, b), [s[a:b] for s in steps], *host(a, b),
                    per_network_closure=optimizer.stacked,
                )  # fmt: skip

            # a function of the round alone, so that the worker count changes no bit (parts.py)
            ranges = round_parts("vmap", module, count, threads) if splittable else [(0, count)]
            results = spread(lambda r: part(*r), ranges, threads, device)
            return joined([r[0] for r in results]), joined([r[1] for r in results])
        return _train_per_network(
            module, x_train, labels, parameters, buffers, steps, *host(0, count), workers,
        )  # fmt: skip
    finally:
        module.train(was_training)


def _splittable(optimizer: OptimizerSpec) -> bool:
    """Whether a round may train as sub-stacks on worker threads: torch.optim's elementwise
    classes (SGD, Adam, ...) without a closure. A plugin's optimizer trains its round as one
    stack: its thread safety is not part of the contract, and a stack-aware one is handed the
    whole round (docs/optimizer-contract.md)."""
    plain = not (optimizer.stacked or optimizer.uses_closure)
    return plain and flat_optimizer_ok(optimizer.factory)


def _part(stacked: dict[str, torch.Tensor], a: int, b: int) -> dict[str, torch.Tensor]:
    return {name: value[a:b] for name, value in stacked.items()}


def _train_mlp_parts(
    plan, features, labels, parameters, steps, optimizer, hyperparameters, host, threads, device
):  # fmt: skip
    """The "mlp" path over engine/threads.py's workers, one sub-stack each (engine/parts.py);
    host(a, b): make_optimizer, make_stepper of networks a..b."""
    count = next(iter(parameters.values())).shape[0]

    def part(a: int, b: int):
        return _train_mlp(
            plan, features, labels, _part(parameters, a, b), [s[a:b] for s in steps], optimizer,
            hyperparameters, *host(a, b),
        )  # fmt: skip

    if threads == 1:
        return joined(spread(lambda r: part(*r), [(0, count)], 1, device))
    key = (tuple(tuple(v.shape[1:]) for v in parameters.values()), threads)
    split = CHOICE.split(key)
    started = time.perf_counter()
    ranges = round_parts("mlp", None, count, threads if split else 1)
    trained = joined(spread(lambda r: part(*r), ranges, threads, device))
    CHOICE.record(key, split, time.perf_counter() - started, count * len(steps))
    return trained


def _host(
    optimizer: OptimizerSpec, hyperparameters: dict, count: int, seeds, schedule, total_steps: int,
    per_epoch: int,
):  # fmt: skip
    """make_optimizer(tensors) and make_stepper(optimizer): how the host builds and drives the
    optimizer of one round (engine/stepping.py)."""
    networks = None
    if optimizer.stacked:
        if seeds is None:
            raise ValueError(
                f"optimizer {optimizer.name!r} is stack-aware: pass seeds=, one per network "
                "(engine.batches.optimizer_seed)"
            )
        networks = Networks(count=count, seeds=tuple(int(seed) for seed in seeds))
    factors = None
    if schedule is not None and not schedule.is_default:
        factors = schedule.factors(total_steps, per_epoch)

    def make_optimizer(tensors):
        return build_optimizer(optimizer, tensors, hyperparameters, networks)

    def make_stepper(built):
        return Stepper(built, optimizer, factors)

    return make_optimizer, make_stepper


def _train_mlp(
    plan, features, labels, parameters, steps, optimizer, hyperparameters, make_optimizer,
    make_stepper,
):  # fmt: skip
    """The "mlp" path: the torch.optim kernels on one flat buffer (or written out) for the
    built-in elementwise optimizers; per-parameter stacked tensors for every other one."""
    plain = not (optimizer.stacked or optimizer.uses_closure)
    return train_stacked_mlp(
        plan, features, labels, parameters, steps, make_optimizer,
        flat_optimizer=plain and flat_optimizer_ok(optimizer.factory),
        per_step=PER_STEP_REFERENCE and plain,
        direct=functools.partial(direct_optimizer_for, optimizer.factory, hyperparameters),
        make_stepper=make_stepper, summed_loss=not optimizer.stacked,
    )  # fmt: skip


def _train_conv(
    plan, images, labels, parameters, steps, optimizer, hyperparameters, make_optimizer,
    make_stepper,
):  # fmt: skip
    """The "conv" path (engine/stacked_conv.py), the optimizer handed to it as on "mlp"."""
    plain = not (optimizer.stacked or optimizer.uses_closure)
    return train_stacked_conv(
        plan, images, labels, parameters, steps, make_optimizer,
        flat_optimizer=plain and flat_optimizer_ok(optimizer.factory),
        direct=functools.partial(direct_optimizer_for, optimizer.factory, hyperparameters),
        make_stepper=make_stepper, summed_loss=not optimizer.stacked,
    )  # fmt: skip


def _train_resnet(
    plan, images, labels, parameters, buffers, steps, optimizer, hyperparameters, make_optimizer,
    make_stepper,
):  # fmt: skip
    """The "resnet" path (engine/stacked_resnet.py), the optimizer handed to it as on "conv"."""
    plain = not (optimizer.stacked or optimizer.uses_closure)
    return train_stacked_resnet(
        plan, images, labels, parameters, buffers, steps, make_optimizer,
        flat_optimizer=plain and flat_optimizer_ok(optimizer.factory),
        direct=functools.partial(direct_optimizer_for, optimizer.factory, hyperparameters),
        make_stepper=make_stepper, summed_loss=not optimizer.stacked,
    )  # fmt: skip


def _train_vmap(
    module, x_train, labels, parameters, buffers, steps, make_optimizer, make_stepper,
    per_network_closure=False,
):  # fmt: skip
    """Any module: functional_call under vmap, autograd through the summed per-network losses.

    The closure (when the optimizer takes one) returns the [K] per-network losses for a
    stack-aware optimizer, their sum (a scalar, torch.optim's convention) otherwise."""
    params = {
        name: value.detach().clone().requires_grad_(True) for name, value in parameters.items()
    }
    tensors = list(params.values())
    state = {name: value.clone() for name, value in buffers.items()}
    stepper = make_stepper(make_optimizer(tensors))
    forward = StackedForward(module)

    def gradients(x, y):
        for tensor in tensors:
            tensor.grad = None
        with torch.enable_grad():
            losses = per_network_loss(forward(params, state, x, per_model_inputs=True), y)
            total = losses.sum()
            total.backward()
        return losses.detach() if per_network_closure else total.detach()

    try:
        stepper.start()
        for indices in steps:
            x, y = x_train[indices], labels[indices]
            gradients(x, y)
            stepper.step(functools.partial(gradients, x, y) if stepper.closure else None)
        stepper.finish()
    except OptimizerStepError as error:  # which networks were NaN or inf (the numerics rule)
        note_blown_up(error, [*tensors, *(t.grad for t in tensors if t.grad is not None)], stepper)
        raise
    return {name: value.detach() for name, value in params.items()}, state


def _train_per_network_stacked(module, x_train, labels, parameters, steps, make_optimizer,
                               make_stepper):  # fmt: skip
    """The "per_network_stacked" path: the stack's forward and backward as on "mlp" or "conv",
    one optimizer per network (stacked_mlp.NetworkSteppers), torch on one thread as there. None
    where the module has neither formulation, or the optimizer's step needs a closure or replaced
    a parameter's storage (stacked_mlp.PerNetworkOnly): then "per_network" trains it afresh."""
    options = dict(make_stepper=make_stepper, optimizer_per_network=True)
    mlp, conv = plan_mlp(module), plan_conv(module)
    features = input_features(mlp, x_train) if mlp is not None else None
    try:
        with torch_single_threaded(x_train.device):
            if features is not None:
                return train_stacked_mlp(
                    mlp, features, labels, parameters, steps, make_optimizer, **options
                )
            if conv is not None:
                return train_stacked_conv(
                    conv, x_train, labels, parameters, steps, make_optimizer, **options
                )
    except PerNetworkOnly:
        pass
    return None


def _train_per_network(
    module, x_train, labels, parameters, buffers, steps, make_optimizer, make_stepper, workers
):
    """One plain module and one optimizer per network: exact for any optimizer (LBFGS included).

    On CPU the networks are spread over worker threads, each running torch single-threaded:
    one network's tiny kernels gain nothing from intra-op threads, and on a busy machine their
    barriers wait for descheduled threads (measured in docs/optimizer-contract.md). Each network
    is computed by one thread from its own state, so the split does not change any result."""
    count = next(iter(parameters.values())).shape[0]
    trained_params = {name: torch.empty_like(value) for name, value in parameters.items()}
    trained_buffers = {name: torch.empty_like(value) for name, value in buffers.items()}
    device = x_train.device
    threads = min(count, cpu_threads(workers)) if device.type == "cpu" else 1
    failed = threading.Event()

    def train(k: int) -> None:
        if failed.is_set():
            return
        network = copy.deepcopy(module).train()
        with torch.no_grad():
            for name, value in network.named_parameters():
                value.copy_(parameters[name][k])
            for name, value in network.named_buffers():
                value.copy_(buffers[name][k])
        tensors = list(network.parameters())
        stepper = make_stepper(make_optimizer(tensors))
        losses = []

        def gradients(x, y):
            for tensor in tensors:
                tensor.grad = None
            with torch.enable_grad():
                loss = F.cross_entropy(network(x), y)
                loss.backward()
            losses.append(loss.detach())
            return loss.detach()

        try:
            stepper.start()
            for indices in steps:
                x, y = x_train[indices[k]], labels[indices[k]]
                gradients(x, y)
                stepper.step(functools.partial(gradients, x, y) if stepper.closure else None)
            stepper.finish()
        except OptimizerStepError as error:
            if not (blew_up(tensors, losses[-1:]) or isinstance(error.error, torch.linalg.LinAlgError)):
                failed.set()
                raise
            # the loss blew up and the optimizer failed on it (an SVD of NaNs), or its linear
            # algebra failed on this network's numbers (an SVD that does not converge on an
            # ill-conditioned statistic): that network is lost to numerics, like a diverged one;
            # NaN state says so (non_finite_networks counts it, it never fits)
            with torch.no_grad():
                for name in trained_params:
                    trained_params[name][k] = float("nan")
                for name, value in network.named_buffers():
                    trained_buffers[name][k] = value
            return
        except BaseException:
            failed.set()
            raise
        with torch.no_grad():
            for name, value in network.named_parameters():
                trained_params[name][k] = value
            for name, value in network.named_buffers():
                trained_buffers[name][k] = value

    # worker threads start with the process's thread count: one, set here before they start
    with torch_single_threaded(device):
        _spread(train, count, threads)
    return trained_params, trained_buffers


def _spread(train: Callable[[int], None], count: int, threads: int) -> None:
    """train(k) for k < count, over up to `threads` worker threads when that is faster.

    Why measured: a small network's step is mostly Python (module calls, the optimizer's loop over
    its tensors), which holds the GIL, so workers gain only what its kernels leave free, and on a
    busy machine may lose it again (docs/optimizer-contract.md). Network 0 trains alone (warm-up),
    network 1 alone and timed, then a wave of `threads` networks in parallel, timed; the rest
    goes whichever way was faster per network (parallel must win by PARALLEL_MARGIN). Which
    thread trains a network never changes it.
    """
    threads = min(threads, (count - 2) // 2)
    if threads < 2:
        for k in range(count):
            train(k)
        return
    train(0)
    started = time.perf_counter()
    train(1)
    alone = time.perf_counter() - started
    with worker_pool(threads) as pool:
        started = time.perf_counter()
        list(pool.map(train, range(2, 2 + threads)))
        wave = time.perf_counter() - started
        rest = range(2 + threads, count)
        if wave < PARALLEL_MARGIN * threads * alone:
            list(pool.map(train, rest))
            return
    for k in rest:
        train(k)


# ---------------------------------------------------------------------------------------------
# Populations


def _round_size_cap(module: nn.Module, settings: TrainingSettings, n_train: int, device) -> int:
    """Networks per round: the setting, or for "auto" what suits the device (measured on CPU)."""
    if settings.networks_per_round != "auto":
        return int(settings.networks_per_round)
    device = torch.device(device)
    parameter_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
    if device.type != "cuda":
        low, high = CPU_NETWORKS_PER_ROUND
        return max(low, min(high, CPU_ROUND_BYTES // max(1, 2 * parameter_bytes)))
    # parameters, gradients, up to two optimizer states, a spare copy, activations of a batch
    per_network = 6 * parameter_bytes + 64 * settings.batch_size * 4 * 1024
    free, _ = torch.cuda.mem_get_info(device)
    return max(1, min(GPU_NETWORKS_PER_ROUND, int(GPU_MEMORY_FRACTION * free // per_network)))


def _round_size(cap: int, target: int, accepted: int, trained: int, budget: int) -> int:
    """Enough networks to reach the target at the acceptance rate seen so far, within cap and budget.

    More than a cap's worth is split into equal rounds (100 wanted, cap 51: 50 + 50, not 51 + 51).
    """
    remaining = target - accepted
    if trained == 0:
        wanted = remaining  # SGD under the protocol fits almost always: start with the target
    elif accepted == 0:
        wanted = cap
    else:
        wanted = math.ceil(remaining * trained / accepted)
    wanted = math.ceil(wanted / math.ceil(wanted / cap))
    return max(1, min(wanted, budget - trained))


@dataclass
class PopulationRequest:
    """One cell's gradient population: the arguments of train_population, for train_populations."""

    module: nn.Module
    x_train: torch.Tensor
    y_train: torch.Tensor
    optimizer: OptimizerSpec
    hyperparameters: dict
    prior: PriorSpec
    settings: TrainingSettings
    target: int
    seed: int
    device: object
    progress: Callable[[int, int], None] | None = None


class _PopulationRun:
    """The round-by-round state of one population: which networks to train next, which to keep.

    Training itself happens outside (train_population: alone; train_populations: stacked with the
    rounds of other populations), so a population is the same whichever way its rounds are trained.
    """

    def __init__(self, request: PopulationRequest):
        self.request = request
        self.started = time.perf_counter()
        self.device = torch.device(request.device)
        self.module = request.module.to(self.device)
        self.x_train = request.x_train.to(self.device)
        self.y_train = request.y_train.to(self.device).long()
        self.n_train = int(self.x_train.shape[0])
        self.target = int(request.target)
        settings = request.settings
        self.budget = (
            int(settings.max_networks)
            if settings.max_networks is not None
            else DEFAULT_BUDGET_PER_TARGET * self.target
        )
        self.cap = _round_size_cap(self.module, settings, self.n_train, self.device)
        self.kept_parameters: list[dict[str, torch.Tensor]] = []
        self.kept_buffers: list[dict[str, torch.Tensor]] = []
        self.found_at: list[int] = []
        self.trained = 0
        self.diverged = 0  # networks whose parameters ended NaN or inf (a diverged loss)
        self.own_seconds = 0.0  # setup and checks of this population (train_populations)
        self.shared_seconds = 0.0  # its share of the rounds trained with others
        self.result: Population | None = None
        # > 1: after the first round, train this many times the networks the acceptance rate
        # asks for (train_populations: a round costs all its steps however few networks it has)
        self.speculation = 1.0

    @property
    def done(self) -> bool:
        every_network_diverged = self.trained > 0 and self.diverged == self.trained
        return len(self.found_at) >= self.target or self.trained >= self.budget or every_network_diverged

    def next_round(self) -> tuple[range, dict, dict, torch.Tensor]:
        """The next round's attempts with their initial (parameters, buffers) and batch orders."""
        settings = self.request.settings
        if settings.networks_per_round == "auto":
            count = _round_size(self.cap, self.target, len(self.found_at), self.trained, self.budget)
            if self.speculation > 1 and self.found_at:
                count = min(
                    max(count, math.ceil(count * self.speculation) + 1),
                    self.cap,
                    self.budget - self.trained,
                )
        else:  # exactly as asked, so that round starts are multiples of it (shared orders)
            count = min(self.cap, self.budget - self.trained)
        attempts = range(self.trained, self.trained + count)
        parameters, buffers = initial_parameters(
            self.module, self.request.prior, self.request.seed, attempts, self.device
        )
        orders = round_orders(
            self.request.seed, attempts, self.n_train, settings.epochs, settings.batch_order
        )
        return attempts, parameters, buffers, orders

    def finish_round(self, attempts: range, parameters: dict, buffers: dict) -> None:
        """Keep the round's networks that fit, in attempt order, up to the target."""
        module = self.module
        was_training = module.training
        module.eval()
        try:
            with one_cpu_thread(self.device):
                fits = (
                    accuracy(
                        module, parameters, buffers, self.x_train, self.y_train,
                        self.request.settings.tie_rule,
                    )
                    == 1.0
                )
        finally:
            module.train(was_training)
        self.diverged += non_finite_networks(parameters, buffers)
        keep = fits.nonzero().flatten()[: self.target - len(self.found_at)]
        self.kept_parameters.append(_select(parameters, keep))
        self.kept_buffers.append(_select(buffers, keep))
        self.found_at.extend(attempts.start + int(k) for k in keep.tolist())
        self.trained += len(attempts)
        if self.request.progress is not None:
            self.request.progress(len(self.found_at), self.trained)

    def population(self, seconds: float | None = None) -> Population:
        reached = len(self.found_at) >= self.target
        tried = self.found_at[-1] + 1 if reached and self.found_at else self.trained
        module, device = self.module, self.device
        return Population(
            parameters=_concatenate(self.kept_parameters, dict(module.named_parameters()), device),
            buffers=_concatenate(self.kept_buffers, dict(module.named_buffers()), device),
            found_at=torch.tensor(self.found_at, dtype=torch.long),
            candidates_tried=tried,
            seconds=time.perf_counter() - self.started if seconds is None else seconds,
            epochs=self.request.settings.epochs,
            exhausted=not reached,
            diverged=self.diverged,
        )


def non_finite_networks(parameters: dict, buffers: dict) -> int:
    """Networks of a stack with a NaN or inf anywhere in their state: their loss diverged."""
    bad = None
    for tensor in (*parameters.values(), *buffers.values()):
        if tensor.is_floating_point() and tensor.dim() > 0:
            row = ~torch.isfinite(tensor.detach()).flatten(1).all(dim=1) if tensor.dim() > 1 else ~torch.isfinite(tensor.detach())
            bad = row if bad is None else bad | row
    return 0 if bad is None else int(bad.sum())


def train_population(
    module: nn.Module,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    optimizer: OptimizerSpec,
    hyperparameters: dict,
    prior: PriorSpec,
    settings: TrainingSettings,
    target: int,
    seed: int,
    device,
    progress: Callable[[int, int], None] | None = None,
) -> Population:
    """Train networks in rounds until `target` fit the training set (100% accuracy) or the budget ends.

    Network a (attempts 0, 1, 2, ... in order) is regenerable from (seed, a): see the module
    docstring. The population holds the first `target` fitting networks in attempt order, so it
    does not depend on networks_per_round. candidates_tried counts the networks trained up to and
    including the last one kept (networks a round trained past it are discarded unseen), so
    accepted / tried estimates P(fit) the same way whatever the round size; when the budget runs out
    first it is every network trained, and exhausted is True. progress(accepted, networks_trained)
    is called after every round.
    """
    request = PopulationRequest(
        module, x_train, y_train, optimizer, hyperparameters, prior, settings, target, seed,
        device, progress,
    )  # fmt: skip
    run = _PopulationRun(request)
    while not run.done:
        attempts, parameters, buffers, orders = run.next_round()
        parameters, buffers = train_networks(
            run.module, run.x_train, run.y_train, optimizer, hyperparameters, parameters, buffers,
            orders, settings.batch_size, seeds=optimizer_seeds(optimizer, seed, attempts),
            schedule=settings.schedule,
        )  # fmt: skip
        run.finish_round(attempts, parameters, buffers)
    return run.population()


def optimizer_seeds(optimizer: OptimizerSpec, seed: int, attempts) -> list[int] | None:
    """Networks.seeds of networks `attempts` for a stack-aware optimizer (None for the others)."""
    if not optimizer.stacked:
        return None
    return [optimizer_seed(seed, a) for a in attempts]


def _stack_key(run: _PopulationRun):
    """Populations with equal keys can train their rounds in one stack on the "mlp" path, with
    each network's numbers unchanged (bmm and elementwise optimizers compute networks apart)."""
    request = run.request
    if choose_path(run.module, request.optimizer) != "mlp":
        return None
    plan = plan_mlp(run.module)
    shapes = tuple((name, tuple(p.shape), p.dtype) for name, p in run.module.named_parameters())
    settings = request.settings
    return (
        repr(plan),
        shapes,
        request.optimizer.name,
        id(request.optimizer.factory),
        repr(sorted(request.hyperparameters.items())),
        int(settings.batch_size),
        int(settings.epochs),
        repr(settings.schedule),
        str(run.device),
        run.n_train,
        tuple(run.x_train.shape),
    )


def train_populations(requests: list[PopulationRequest]) -> list[Population]:
    """train_population for each request; rounds of populations that can share a stack (same MLP,
    optimizer, hyperparameters, N, batch size and epochs; different training sets and seeds) are
    trained together in one set of kernels.

    Every population equals what train_population gives it alone: each round's networks, orders
    and acceptance are its own; only the kernels are shared. The `seconds` of a population are its
    own setup and checks plus its share (by networks) of the rounds it trained with others.
    """
    runs = [_PopulationRun(request) for request in requests]
    groups: dict[object, list[int]] = {}
    for index, run in enumerate(runs):
        key = None if PER_STEP_REFERENCE else _stack_key(run)
        groups.setdefault(key if key is not None else ("alone", index), []).append(index)
    for members in groups.values():
        group = [runs[i] for i in members]
        if len(group) > 1 and _train_stacked_rounds(group):
            for run in group:
                run.result = run.population(run.own_seconds + run.shared_seconds)
            continue
        for run in group:
            run.result = train_population(*_arguments(run.request))
    return [run.result for run in runs]


def _arguments(request: PopulationRequest) -> tuple:
    return (
        request.module, request.x_train, request.y_train, request.optimizer,
        request.hyperparameters, request.prior, request.settings, request.target, request.seed,
        request.device, request.progress,
    )  # fmt: skip


def _train_stacked_rounds(group: list[_PopulationRun]) -> bool:
    """Rounds of several populations with one stacked key: round r of every unfinished population
    trains in one stack, each network on its own population's training set. False (nothing
    trained) when the module's prefix does not give [N, features]."""
    first = group[0]
    request = first.request
    plan = plan_mlp(first.module)
    features = [input_features(plan, run.x_train) for run in group]
    if any(f is None for f in features):
        return False
    all_features = torch.cat(features)
    all_labels = torch.cat([run.y_train for run in group])
    n_train = first.n_train
    settings = request.settings
    per_epoch = steps_per_epoch(n_train, settings.batch_size)
    if request.settings.batch_order == "independent":
        for run in group:  # populations do not depend on round sizes (module docstring)
            run.speculation = SPECULATION
    while True:
        active = [(j, run) for j, run in enumerate(group) if not run.done]
        if not active:
            return True
        rounds = []
        for j, run in active:
            started = time.perf_counter()
            rounds.append((j, run, *run.next_round()))
            run.own_seconds += time.perf_counter() - started
        started = time.perf_counter()
        names = list(rounds[0][3])
        parameters = {name: torch.cat([r[3][name] for r in rounds]) for name in names}
        # each network's indices point into its own population's block of all_features
        orders = torch.cat([o.to(all_features.device) + j * n_train for j, *_, o in rounds])
        steps = batch_indices(orders, settings.batch_size)
        seeds = None
        if request.optimizer.stacked:  # each network's own, from its own population's seed
            seeds = [
                seed
                for _, run, attempts, *_ in rounds
                for seed in optimizer_seeds(request.optimizer, run.request.seed, attempts)
            ]
        device = all_features.device
        warn_unless_invariant(device)
        threads = cpu_threads("auto") if device.type == "cpu" else 1
        threads = threads if _splittable(request.optimizer) else 1

        def train(index, parameters=parameters, steps=steps, seeds=seeds, threads=threads):
            if index is not None:  # networks `index` alone (the numerics rule)
                parameters = _rows(parameters, index)
                steps = [s.index_select(0, index.to(s.device)) for s in steps]
                seeds = None if seeds is None else [seeds[i] for i in index.tolist()]

            def host(a: int, b: int):
                return _host(
                    request.optimizer, request.hyperparameters, b - a,
                    None if seeds is None else seeds[a:b], settings.schedule, len(steps),
                    per_epoch,
                )  # fmt: skip

            trained = _train_mlp_parts(
                plan, all_features, all_labels, parameters, steps, request.optimizer,
                request.hyperparameters, host, threads, device,
            )  # fmt: skip
            return trained, {}

        trained, _ = train_losing_diverged(train, parameters, {})
        elapsed = time.perf_counter() - started
        total = sum(len(r[2]) for r in rounds)
        start = 0
        for j, run, attempts, _, buffers, _ in rounds:
            count = len(attempts)
            share = {name: value[start : start + count] for name, value in trained.items()}
            run.shared_seconds += elapsed * count / total
            started = time.perf_counter()
            run.finish_round(attempts, share, {n: v.clone() for n, v in buffers.items()})
            run.own_seconds += time.perf_counter() - started
            start += count


def regenerate(
    module: nn.Module,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    optimizer: OptimizerSpec,
    hyperparameters: dict,
    prior: PriorSpec,
    settings: TrainingSettings,
    seed: int,
    attempts,
    device,
    round_starts=None,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Retrain networks `attempts` (e.g. Population.found_at) exactly as train_population did.

    Independent batch orders need nothing else. Shared orders belong to a round: pass each
    network's round's first attempt in `round_starts` (for a fixed integer networks_per_round R,
    a - a % R; under "auto" the round starts are not recorded, so give shared runs an integer R
    if they must be regenerable). Returns stacked (parameters, buffers), [len(attempts), ...].
    """
    device = torch.device(device)
    module = module.to(device)
    attempts = [int(a) for a in attempts]
    if not attempts:
        return (
            _concatenate([], dict(module.named_parameters()), device),
            _concatenate([], dict(module.named_buffers()), device),
        )
    n_train = int(x_train.shape[0])
    parameters, buffers = initial_parameters(module, prior, seed, attempts, device)
    if settings.batch_order == "independent":
        orders = torch.stack([network_orders(seed, a, n_train, settings.epochs) for a in attempts])
    else:
        if round_starts is None:
            raise ValueError(
                "shared batch orders: pass round_starts, the first attempt of each network's round"
            )
        orders = torch.stack(
            [shared_orders(seed, int(s), n_train, settings.epochs) for s in round_starts]
        )
    return train_networks(
        module, x_train.to(device), y_train.to(device), optimizer, hyperparameters, parameters, buffers,
        orders, settings.batch_size, seeds=optimizer_seeds(optimizer, seed, attempts),
        schedule=settings.schedule,
    )  # fmt: skip


def _select(stacked: dict[str, torch.Tensor], keep: torch.Tensor) -> dict[str, torch.Tensor]:
    """Networks `keep` of a round; no copy when all are kept (the usual case for SGD)."""
    if not stacked or keep.numel() == next(iter(stacked.values())).shape[0]:
        return stacked
    keep = keep.to(next(iter(stacked.values())).device)
    return {name: value.index_select(0, keep) for name, value in stacked.items()}


def _concatenate(chunks, template: dict[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
    """Stack the kept networks of all rounds; [0, ...] tensors when none were kept."""
    if len(chunks) == 1:
        return {name: value.detach() for name, value in chunks[0].items()}
    if chunks:
        return {name: torch.cat([chunk[name] for chunk in chunks]).detach() for name in chunks[0]}
    return {
        name: torch.empty(0, *value.shape, dtype=value.dtype, device=device)
        for name, value in template.items()
    }


@contextlib.contextmanager
def per_step_path():
    """Train through the earlier per-step loop (PER_STEP_REFERENCE) inside this block: benchmarks."""
    global PER_STEP_REFERENCE
    saved, PER_STEP_REFERENCE = PER_STEP_REFERENCE, True
    try:
        yield
    finally:
        PER_STEP_REFERENCE = saved
