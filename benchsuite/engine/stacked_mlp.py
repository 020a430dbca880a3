"""Hand-written forward and backward of many stacked MLPs: the fast path of gradient training.

Why by hand: for small networks trained with batch size 2 the cost of autograd and torch.func is
the bookkeeping, not the arithmetic. A Sequential of Linear and ReLU layers (after a parameter-free
per-sample prefix such as MaxPool2d + Flatten, which is applied once to the whole training set)
needs only batched matmuls: per step 2 bmm per layer, one threshold_backward per ReLU and a
log-softmax, with the gradients written in place into preallocated tensors. Measured on the
2-core EPYC (paper MLP, width 1, 50 networks, one thread): 61k network-steps/s against 17k for the
vmap + autograd path. What remains is the GEMM calls (about 5 us per network-step over 14
batched products) and the memory traffic of the first layer's weights (read twice, gradient
written, then read and written by the optimizer).

Exactness: every operation is the one autograd runs for a plain nn.Module (the same log-softmax,
log-softmax backward and threshold_backward kernels, the same -1/b loss gradient in the parameter
dtype), with each matmul batched over the model axis. torch.bmm computes every batch item by itself,
so network k's numbers do not depend on how many networks are stacked (tests: bit-identical to
training networks one at a time). Against a plain nn.Module (torch.mm per network) it is
bit-identical whenever PyTorch picks the same GEMM kernel for the batched and the single product;
on CPU it does for products of at least 400 multiply-adds, below that bmm uses a plain loop and mm
uses MKL, which may round the last bit differently (see tests/test_training.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from benchsuite.engine import stopping
from benchsuite.engine.divergence import blew_up, note_blown_up
from benchsuite.engine.stacked_optim import direct_optimizer
from benchsuite.errors import OptimizerStepError

# Layers that act on each sample alone and hold no state: safe to apply once to all inputs.
PER_SAMPLE_PREFIX_LAYERS = (nn.MaxPool2d, nn.AvgPool2d, nn.Flatten, nn.Identity)


@dataclass(frozen=True)
class Layer:
    kind: str  # "linear" or "relu"
    weight: str | None = None  # parameter names in module.named_parameters()
    bias: str | None = None


@dataclass(frozen=True)
class MLPPlan:
    """A Sequential seen as: parameter-free prefix (run once on the inputs), then Linear/ReLU layers."""

    prefix: nn.Sequential
    layers: tuple[Layer, ...]


def plan_mlp(module: nn.Module) -> MLPPlan | None:
    """The MLPPlan of `module`, or None when it is not a plain Sequential of supported layers."""
    if type(module) is not nn.Sequential or any(True for _ in module.buffers()):
        return None
    prefix, layers = [], []
    for name, child in module.named_children():
        if type(child) is nn.Linear:
            bias = f"{name}.bias" if child.bias is not None else None
            layers.append(Layer("linear", f"{name}.weight", bias))
        elif type(child) is nn.ReLU:
            layers.append(Layer("relu"))
        elif type(child) in PER_SAMPLE_PREFIX_LAYERS and not layers:
            prefix.append(child)
        elif type(child) is nn.Identity:
            continue
        else:
            return None
    if not any(layer.kind == "linear" for layer in layers):
        return None
    return MLPPlan(nn.Sequential(*prefix), tuple(layers))


def input_features(plan: MLPPlan, x: torch.Tensor) -> torch.Tensor | None:
    """The prefix applied to all inputs at once: [N, features], or None if not two-dimensional."""
    with torch.no_grad():
        features = plan.prefix(x)
    return features.contiguous() if features.dim() == 2 else None


def loss_gradient_table(labels: torch.Tensor, classes: int, batch: int, dtype) -> torch.Tensor:
    """[N, classes]: d(mean over a batch of b of -log p[label]) / d log p = -1/b at the label, else 0.

    -1/b is rounded in `dtype` (float32 division), as autograd's nll_loss backward computes it.
    """
    negative_inverse = -(torch.ones((), dtype=dtype, device=labels.device) / batch)
    table = torch.zeros(labels.shape[0], classes, dtype=dtype, device=labels.device)
    return table.scatter_(1, labels.view(-1, 1), negative_inverse.expand(labels.shape[0], 1))


# Optimizers whose update reads nothing but each entry's own gradient and state, and not the shape
# of the tensor it sits in: one instance over a single flat buffer holding every stacked parameter
# is exactly the same arithmetic as one over the separate tensors (or K separate networks), in one
# elementwise kernel per operation instead of one per parameter tensor.
FLAT_OPTIMIZER_CLASSES = (
    torch.optim.SGD,
    torch.optim.Adam,
    torch.optim.AdamW,
    torch.optim.RMSprop,
    torch.optim.Adagrad,
)
GATHER_BYTES = 4 * 2**20  # inputs and loss gradients gathered ahead, per chunk of steps


def flat_optimizer_ok(factory) -> bool:
    """Whether `factory` builds one of FLAT_OPTIMIZER_CLASSES (plain or wrapped, see builtins)."""
    target = getattr(factory, "optimizer_class", factory)
    return isinstance(target, type) and issubclass(target, FLAT_OPTIMIZER_CLASSES)


def flat_views(
    parameters: dict[str, torch.Tensor],
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One contiguous buffer holding copies of all `parameters`, and each one as a view into it."""
    first = next(iter(parameters.values()))
    total = sum(value.numel() for value in parameters.values())
    flat = torch.empty(total, dtype=first.dtype, device=first.device)
    views, offset = {}, 0
    for name, value in parameters.items():
        view = flat[offset : offset + value.numel()].view(value.shape)
        view.copy_(value)
        views[name] = view
        offset += value.numel()
    return flat, views


def train_stacked_mlp(
    plan: MLPPlan,
    features: torch.Tensor,
    labels: torch.Tensor,
    parameters: dict[str, torch.Tensor],
    steps: list[torch.Tensor],
    make_optimizer,
    flat_optimizer: bool = False,
    per_step: bool = False,
    direct=None,
    make_stepper=None,
    summed_loss: bool = False,
    optimizer_per_network: bool = False,
) -> dict[str, torch.Tensor]:
    """Train K stacked MLPs: at step t network k takes one optimizer step on features[steps[t][k]].

    `parameters`: stacked [K, ...] initial values (not modified). `make_optimizer(list_of_tensors)`
    builds one optimizer over the stacked tensors (valid only for elementwise or stack-aware
    optimizers). Kernels run on the caller's torch threads (engine/threads.py: one).
    flat_optimizer: hand the optimizer one flat tensor holding all parameters (only for
    FLAT_OPTIMIZER_CLASSES, see flat_optimizer_ok); then `direct(flat)` may give the stepper
    without building a torch.optim object (stacked_optim.direct_optimizer_for). per_step: the earlier loop (one gather per
    step, a fresh tensor per activation), kept as the reference the benchmarks compare against.
    make_stepper(optimizer): the host's engine.stepping.Stepper (schedule, closure, train/eval,
    errors); None steps the optimizer plainly. When the stepper passes a closure, the closure
    recomputes the step's forward and backward at the current weights and returns each network's
    mean cross-entropy, [K] (summed_loss: their sum, a scalar). optimizer_per_network: one
    optimizer per network (NetworkSteppers), for those neither elementwise nor stack-aware.
    Returns the trained stacked parameters (views into one buffer).
    """
    if optimizer_per_network:
        flat, params, grads, stepper = network_steppers(parameters, make_optimizer, make_stepper)
    else:
        flat, params, grads, stepper = stacked_stepper(
            parameters, make_optimizer, flat_optimizer and not per_step, direct, make_stepper
        )
    layers = plan.layers
    first_linear = next(i for i, layer in enumerate(layers) if layer.kind == "linear")
    # Views made once: they follow the in-place updates, and save a transpose per use per step.
    transposed = {
        layer.weight: params[layer.weight].transpose(1, 2) for layer in layers if layer.weight
    }
    run = _run_steps_per_step if per_step else _run_steps
    try:
        stepper.start()
        run(
            params,
            grads,
            transposed,
            layers,
            first_linear,
            features,
            labels,
            steps,
            stepper,
            summed_loss,
        )
        stepper.finish()
    except OptimizerStepError as error:  # which networks were NaN or inf (the numerics rule)
        note_blown_up(error, [*params.values(), *grads.values()], stepper)
        raise
    finally:
        flat.grad = None
        for value in params.values():
            value.grad = None
    return params


def stacked_stepper(parameters, make_optimizer, flat_optimizer: bool, direct=None, make_stepper=None):
    """(flat, params, grads, stepper): the stacked parameters and their gradients as views into
    one buffer each, and what steps them. With `flat_optimizer` one optimizer updates the whole
    buffer (the written-out SGD/Adam where `direct` or engine.stacked_optim has one); otherwise one
    over the per-tensor views. The caller clears `flat.grad` and each view's grad when done."""
    with torch.no_grad():
        flat, params = flat_views(parameters)
        flat_grad, grads = flat_views(parameters)
    if flat_optimizer:
        flat.grad = flat_grad
        optimizer = direct(flat) if direct is not None else None
        if optimizer is None:
            optimizer = make_optimizer([flat])
            optimizer = direct_optimizer(optimizer) or optimizer
    else:
        for name, value in params.items():
            value.grad = grads[name]
        optimizer = make_optimizer(list(params.values()))
    stepper = make_stepper(optimizer) if make_stepper is not None else PlainStepper(optimizer)
    return flat, params, grads, stepper


class PerNetworkOnly(ValueError):
    """An optimizer that cannot step one network of a stack on gradients computed for all: its
    step needs the closure, or it replaced a parameter's storage (`p.data = ...`), so its updates
    would not reach the stack. The host trains it on the "per_network" path instead."""


def network_steppers(parameters, make_optimizer, make_stepper):
    """(flat, params, grads, stepper) as stacked_stepper gives them, but with one optimizer per
    network (NetworkSteppers): the "per_network_stacked" path."""
    with torch.no_grad():
        flat, params = flat_views(parameters)
        flat_grad, grads = flat_views(parameters)
    return flat, params, grads, NetworkSteppers(params, grads, make_optimizer, make_stepper)


class NetworkSteppers:
    """One optimizer per network of a stack, stepped one network after another on the gradients
    the stacked formulation computed for all: the "per_network_stacked" path.

    Why: an optimizer that couples a network's entries (a layer's norm, a matrix's inverse root)
    cannot step the stacked tensors as one, so it used to train each network as a plain module
    through autograd, whose forward and backward cost as much as the step (half or more of a
    LeNet step, docs/optimizer-contract.md). Here network k's optimizer holds views of its slices
    of the stacked tensors, each view's .grad its slice of the gradients: its updates land in the
    stack, and its numbers are those of network k alone (the stacked kernels compute each network
    by itself). As on "per_network", an optimizer that fails on numbers (NaN or inf in that
    network, or a LinAlgError) loses that network alone: NaN weights, no more steps. Before each
    step the views get their gradients again (an optimizer may set `p.grad = None`, as a plain
    loop's zero_grad would); after it, a view whose storage was replaced raises PerNetworkOnly.
    """

    closure = False
    loss = None

    def __init__(self, params, grads, make_optimizer, make_stepper):
        count = next(iter(params.values())).shape[0]
        self.tensors = [[value[k] for value in params.values()] for k in range(count)]
        self.grads = [[value[k] for value in grads.values()] for k in range(count)]
        self.storage = [[tensor.data_ptr() for tensor in tensors] for tensors in self.tensors]
        for k in range(count):
            self._attach(k)
        self.steppers = [make_stepper(make_optimizer(tensors)) for tensors in self.tensors]
        if any(stepper.closure for stepper in self.steppers):
            raise PerNetworkOnly("the optimizer's step needs a closure")
        self.lost = [False] * count

    def _attach(self, k: int) -> None:
        for tensor, grad in zip(self.tensors[k], self.grads[k]):
            tensor.grad = grad

    def _each(self, method: str) -> None:
        for k, stepper in enumerate(self.steppers):
            if self.lost[k]:
                continue
            self._attach(k)
            try:
                getattr(stepper, method)()
                if [tensor.data_ptr() for tensor in self.tensors[k]] != self.storage[k]:
                    raise PerNetworkOnly("the optimizer replaced a parameter's storage")
            except OptimizerStepError as error:
                linalg = isinstance(error.error, torch.linalg.LinAlgError)
                if not (linalg or blew_up(self.tensors[k])):
                    # judged here, on network k alone: networks lost before are NaN, and the
                    # stack-wide rule (divergence.lost_to_numerics) would take them for a cause
                    error.blown_up = torch.zeros(len(self.steppers), dtype=torch.bool)
                    raise
                self.lost[k] = True  # lost to numerics, as on "per_network"
                with torch.no_grad():
                    for tensor in self.tensors[k]:
                        tensor.fill_(float("nan"))

    def start(self) -> None:
        self._each("start")

    def step(self, closure=None) -> None:
        self._each("step")

    def finish(self) -> None:
        self._each("finish")


class PlainStepper:
    """`optimizer.step()` per step, nothing else (callers that give no make_stepper)."""

    closure = False

    def __init__(self, optimizer):
        self.optimizer = optimizer

    def start(self) -> None:
        pass

    def step(self, closure=None):
        stopping.check()  # as stepping.Stepper.step
        return self.optimizer.step()

    def take_steps(self, count: int) -> list[float]:
        """As stepping.Stepper.take_steps, without a schedule."""
        stopping.check()
        return [self.optimizer.param_groups[0]["lr"]] * count

    def finish(self) -> None:
        pass


def step_runs(steps, most):
    """(start, stop, K, b) of each run of consecutive steps of one shape [K, b] (the last epoch's
    partial batch starts a run of its own), a run at most most(K, b) steps long (at least one)."""
    start = 0
    while start < len(steps):
        count, batch = steps[start].shape
        end = min(len(steps), start + max(1, most(count, batch)))
        stop = start + 1
        while stop < end and steps[stop].shape == (count, batch):
            stop += 1
        yield start, stop, count, batch
        start = stop


def gather_limit(item_numel: int, classes: int, element_size: int):
    """most(K, b) for step_runs: the steps whose inputs and loss gradients fit in GATHER_BYTES."""
    per_item = (item_numel + classes) * element_size
    return lambda count, batch: GATHER_BYTES // max(1, count * batch * per_item)


def _gathered_chunks(features, labels, classes, steps):
    """Per step (inputs [K, b, F], loss gradients [K, b, C]) as views of tensors gathered for a
    chunk of consecutive equally-shaped steps at once (one index_select per chunk, not per step)."""
    feature_count = features.shape[1]
    tables = {}  # batch size -> [N, classes]: d loss / d log-probabilities of each point
    most = gather_limit(feature_count, classes, features.element_size())
    for start, stop, count, batch in step_runs(steps, most):
        indices = torch.stack(steps[start:stop]).view(-1)
        if batch not in tables:
            tables[batch] = loss_gradient_table(labels, classes, batch, features.dtype)
        inputs = features.index_select(0, indices).view(stop - start, count, batch, feature_count)
        gradients = tables[batch].index_select(0, indices).view(stop - start, count, batch, classes)
        for s in range(stop - start):
            yield inputs[s], gradients[s]


def _step_buffers(params, layers, first_linear, count, batch, classes, dtype, device):
    """Preallocated per-step tensors for steps of [count, batch]: each Linear's output, the
    log-probabilities, and the gradients flowing back (written with out= every step)."""

    def empty(width):
        return torch.empty(count, batch, width, dtype=dtype, device=device)

    outputs, backward = {}, {}
    for position, layer in enumerate(layers):
        if layer.kind == "linear":
            out_features, in_features = params[layer.weight].shape[1:]
            outputs[position] = empty(out_features)
            if position > first_linear:
                backward[position] = empty(in_features)
    return outputs, backward, empty(classes), empty(classes)


def _run_steps(
    params, grads, transposed, layers, first_linear, features, labels, steps, stepper,
    summed_loss=False,
):  # fmt: skip
    classes = next(
        params[layer.weight].shape[1] for layer in reversed(layers) if layer.kind == "linear"
    )
    last = len(layers) - 1
    biases = {  # views made once, like `transposed`
        layer.bias: params[layer.bias].unsqueeze(1) for layer in layers if layer.bias is not None
    }
    threshold_backward = torch.ops.aten.threshold_backward.grad_input
    buffers = {}  # (count, batch) -> _step_buffers

    def gradients(x, loss_gradient, step_buffers):
        """Forward and backward of one step at the current weights: gradients into `grads`."""
        outputs, backward, log_probs, grad_logits = step_buffers
        h = x
        inputs = []  # inputs[i]: what layer i received (a ReLU's input is overwritten)
        for position, layer in enumerate(layers):
            inputs.append(h)
            if layer.kind == "linear":
                out = outputs[position]
                if layer.bias is None:
                    torch.bmm(h, transposed[layer.weight], out=out)
                else:
                    torch.baddbmm(biases[layer.bias], h, transposed[layer.weight], out=out)
                h = out
            else:
                h = h.relu_()  # in place: only its output is needed (threshold_backward)
        torch._log_softmax(h, -1, False, out=log_probs)
        grad = torch._log_softmax_backward_data(
            loss_gradient, log_probs, -1, log_probs.dtype, out=grad_logits
        )
        for position in range(last, first_linear - 1, -1):
            layer = layers[position]
            if layer.kind == "relu":
                output = inputs[position + 1] if position < last else h
                grad = threshold_backward(grad, output, 0, grad_input=grad)  # in place
                continue
            torch.bmm(grad.transpose(1, 2), inputs[position], out=grads[layer.weight])
            if layer.bias is not None:
                torch.sum(grad, 1, out=grads[layer.bias])
            if position > first_linear:
                grad = torch.bmm(grad, params[layer.weight], out=backward[position])

    with torch.no_grad():
        for x, loss_gradient in _gathered_chunks(features, labels, classes, steps):
            shape = tuple(x.shape[:2])
            if shape not in buffers:
                buffers[shape] = _step_buffers(
                    params, layers, first_linear, *shape, classes, x.dtype, x.device
                )
            step_buffers = buffers[shape]
            gradients(x, loss_gradient, step_buffers)
            if stepper.closure:
                stepper.step(_closure(gradients, x, loss_gradient, step_buffers, summed_loss))
            else:
                stepper.step()


def _closure(gradients, x, loss_gradient, step_buffers, summed):
    """The step's closure: the same batch at the current weights; returns the [K] losses.

    loss_gradient is -1/b at each point's label, so sum(loss_gradient * log_probs) over the
    batch is each network's mean cross-entropy (to rounding: the value is for the optimizer's
    information; the gradients are the exact ones)."""

    def closure():
        with torch.no_grad():
            gradients(x, loss_gradient, step_buffers)
            losses = torch.mul(loss_gradient, step_buffers[2]).sum(dim=(1, 2))
            return losses.sum() if summed else losses

    return closure


def _run_steps_per_step(
    params, grads, transposed, layers, first_linear, features, labels, steps, stepper,
    summed_loss=False,
):  # fmt: skip
    """The earlier loop (benchmarks' reference): no closure (train_networks keeps closures off it)."""
    feature_count = features.shape[1]
    loss_gradients = {}  # batch size -> [N, classes]: d loss / d log-probabilities of each point
    with torch.no_grad():
        for indices in steps:
            count, batch = indices.shape
            flat = indices.view(-1)
            h = features.index_select(0, flat).view(count, batch, feature_count)
            inputs = []  # inputs[i]: what layer i received
            for layer in layers:
                inputs.append(h)
                if layer.kind == "linear":
                    if layer.bias is None:
                        h = torch.bmm(h, transposed[layer.weight])
                    else:
                        h = torch.baddbmm(
                            params[layer.bias].unsqueeze(1), h, transposed[layer.weight]
                        )
                else:
                    h = torch.relu(h)
            log_probs = torch._log_softmax(h, -1, False)
            if batch not in loss_gradients:
                loss_gradients[batch] = loss_gradient_table(labels, h.shape[-1], batch, h.dtype)
            grad = loss_gradients[batch].index_select(0, flat).view(log_probs.shape)
            grad = torch._log_softmax_backward_data(grad, log_probs, -1, log_probs.dtype)
            for position in range(len(layers) - 1, first_linear - 1, -1):
                layer = layers[position]
                if layer.kind == "relu":
                    output = inputs[position + 1] if position + 1 < len(layers) else h
                    grad = torch.ops.aten.threshold_backward(grad, output, 0)
                    continue
                torch.bmm(grad.transpose(1, 2), inputs[position], out=grads[layer.weight])
                if layer.bias is not None:
                    torch.sum(grad, 1, out=grads[layer.bias])
                if position > first_linear:
                    grad = torch.bmm(grad, params[layer.weight])
            stepper.step()
