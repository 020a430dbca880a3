"""SGD and Adam/AdamW steps over one flat tensor, written out: torch.optim's arithmetic, less overhead.

Why: stacked training of small networks (engine/stacked_mlp.py) calls the optimizer once per step
on one flat buffer holding every network's parameters. torch.optim's single-tensor path then
still costs its Python bookkeeping and a fresh temporary per operation, and its `sqrt` (MKL's
vector sqrt on CPU) is ~18x slower on exact zeros than on other numbers (measured: 1.45 ms vs
79 us for 283k float32 on one core), and a stack of networks with dead ReLU units has many
second moments that stay exactly 0. Here the same elementwise kernels run in the same order on
preallocated temporaries, and second moments too small to matter are raised before the square
root so that it never sees a zero (sqrt_floor). CPU only: on CUDA torch.optim defaults to its
multi-tensor path, which stays in charge there.

Exactness: each line below is the line of torch.optim's `_single_tensor_sgd` / `_single_tensor_adam`
(torch 2.14, the path torch.optim takes on CPU by default) that it replaces, with the same Python
scalars and torch's own kernels (numpy's sqrt is not an option: torch's CPU sqrt, MKL's, differs
from the correctly rounded one in the last bit for some inputs). tests/test_training.py compares
trained parameters against plain torch.optim bit for bit.
Anything else (other optimizers, amsgrad, maximize, tensor learning rates, ...) keeps torch.optim.
"""

from __future__ import annotations

import inspect

import numpy as np
import torch

# Elements per thread of one block of the Adam step. Blocks of 32k (six float32 arrays in 768 KB
# of L2) measured no faster than whole arrays for the quickstart's largest stacks (200 width-1
# MLPs, 2.3M parameters) on the 2-core Xeon guest, whose L3 holds them, while adding ~500 small
# kernel calls per step; so only stacks beyond 4 MB per array and thread are split.
BLOCK_ELEMENTS = 1 << 20


def sqrt_floor(eps: float, divisor: float, dtype: torch.dtype) -> float:
    """A v0 > 0 such that fl(fl(fl(sqrt(v)) / divisor) + eps) == eps for every 0 <= v <= v0.

    Why: torch's CPU sqrt is ~18x slower on exact zeros (and denormals) than on other numbers,
    and Adam's second moments are often exactly 0 (dead units). Raising every v below v0 to v0
    cannot change a denominator: with sqrt(v0) / divisor a quarter of half an ulp of eps, the
    rounded quotient (a few ulps of error at most, even if sqrt were 1 ulp off and not monotone)
    stays far below half an ulp of eps, so adding eps rounds back to eps exactly. 0 when eps is
    not positive (then nothing is raised).
    """
    dtype_np = np.float32 if dtype == torch.float32 else np.float64
    eps_rounded = dtype_np(eps)  # what add_(eps) adds
    if not eps_rounded > 0 or not divisor > 0:
        return 0.0
    half_ulp = float(np.spacing(eps_rounded)) / 2
    bound = (half_ulp / 4 * divisor) ** 2
    floor = dtype_np(bound)
    if float(floor) > bound:
        floor = np.nextafter(floor, dtype_np(0))
    return float(floor)


def _supported(group: dict) -> bool:
    if group.get("maximize") or group.get("differentiable") or group.get("capturable"):
        return False
    if group.get("fused") or group.get("foreach"):
        return False
    return all(isinstance(group.get(key, 0.0), (int, float)) for key in ("lr", "weight_decay"))


class DirectSGD:
    """torch.optim.SGD (dampening 0 or not, momentum, nesterov, weight decay) on one tensor."""

    def __init__(self, param: torch.Tensor, group: dict):
        self.param, self.grad = param, param.grad
        # the host's learning-rate schedule sets param_groups[0]["lr"] before each step
        self.param_groups = [{"lr": float(group["lr"])}]
        self.momentum = float(group["momentum"])
        self.dampening = float(group["dampening"])
        self.nesterov = bool(group["nesterov"])
        self.weight_decay = float(group["weight_decay"])
        self.buffer = None
        self.scratch = torch.empty_like(param) if self.weight_decay != 0 else None

    @torch.no_grad()
    def step(self) -> None:
        param, grad = self.param, self.grad
        if self.weight_decay != 0:  # grad = grad.add(param, alpha=weight_decay)
            grad = torch.add(grad, param, alpha=self.weight_decay, out=self.scratch)
        if self.momentum != 0:
            if self.buffer is None:  # buf = grad.detach().clone()
                self.buffer = grad.detach().clone()
            else:
                self.buffer.mul_(self.momentum).add_(grad, alpha=1 - self.dampening)
            if self.nesterov:  # grad = grad.add(buf, alpha=momentum)
                grad = grad.add(self.buffer, alpha=self.momentum)
            else:
                grad = self.buffer
        param.add_(grad, alpha=-self.param_groups[0]["lr"])


class DirectAdam:
    """torch.optim.Adam / AdamW (amsgrad off) on one tensor."""

    def __init__(self, param: torch.Tensor, group: dict, decoupled: bool):
        self.param, self.grad = param, param.grad
        self.param_groups = [{"lr": float(group["lr"])}]  # set by the host's schedule
        self.beta1, self.beta2 = (float(b) for b in group["betas"])
        self.eps = float(group["eps"])
        self.weight_decay = float(group["weight_decay"])
        self.decoupled = decoupled
        self.exp_avg = torch.zeros_like(param, memory_format=torch.preserve_format)
        self.exp_avg_sq = torch.zeros_like(param, memory_format=torch.preserve_format)
        self.denom = torch.empty_like(param)
        self.scratch = torch.empty_like(param) if self.weight_decay and not decoupled else None
        self.step_t = torch.tensor(0.0, dtype=torch.float32)  # as torch.optim counts steps
        self.blocks: dict[int, list[tuple[torch.Tensor, ...]]] = {}

    def _blocks(self) -> list[tuple[torch.Tensor, ...]]:
        """(param, grad, exp_avg, exp_avg_sq, denom, scratch) slices of BLOCK_ELEMENTS per thread
        in use: all eight operations run on one block before the next, so that a stack larger
        than the caches does not stream every array from memory eight times per step."""
        threads = torch.get_num_threads()
        if threads not in self.blocks:
            size = BLOCK_ELEMENTS * threads
            arrays = (self.param, self.grad, self.exp_avg, self.exp_avg_sq, self.denom)
            arrays += (self.scratch if self.scratch is not None else self.denom,)
            self.blocks[threads] = list(zip(*(a.split(size) for a in arrays)))
        return self.blocks[threads]

    @torch.no_grad()
    def step(self) -> None:
        lr, beta1, beta2 = self.param_groups[0]["lr"], self.beta1, self.beta2
        self.step_t += 1
        step = self.step_t.item()
        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        step_size = lr / bias_correction1
        bias_correction2_sqrt = bias_correction2**0.5
        # second moments below `floor` are raised to it before the square root: their
        # denominators are eps either way (sqrt_floor)
        floor = sqrt_floor(self.eps, bias_correction2_sqrt, self.param.dtype)
        weight_decay, eps = self.weight_decay, self.eps
        for param, grad, exp_avg, exp_avg_sq, denom, scratch in self._blocks():
            if weight_decay != 0:
                if self.decoupled:
                    param.mul_(1 - lr * weight_decay)
                else:
                    grad = torch.add(grad, param, alpha=weight_decay, out=scratch)
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            # denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
            if floor > 0:
                torch.clamp_min(exp_avg_sq, floor, out=denom)
                torch.sqrt(denom, out=denom)
            else:
                torch.sqrt(exp_avg_sq, out=denom)
            denom.div_(bias_correction2_sqrt).add_(eps)
            param.addcdiv_(exp_avg, denom, value=-step_size)


def _checked_options(optimizer_class, options: dict) -> dict:
    """The param_group torch would build from `options` (its __init__ defaults filled in), with
    torch's own checks of the values; KeyError for an argument the class does not take."""
    signature = inspect.signature(optimizer_class.__init__)
    group = {
        name: parameter.default
        for name, parameter in signature.parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }
    unknown = set(options) - set(group)
    if unknown:
        raise KeyError(", ".join(sorted(unknown)))
    group.update(options)
    if not 0.0 <= group["lr"]:
        raise ValueError(f"Invalid learning rate: {group['lr']}")
    if not 0.0 <= group["weight_decay"]:
        raise ValueError(f"Invalid weight_decay value: {group['weight_decay']}")
    if optimizer_class is torch.optim.SGD:
        if group["momentum"] < 0.0:
            raise ValueError(f"Invalid momentum value: {group['momentum']}")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
    else:
        if not 0.0 <= group["eps"]:
            raise ValueError(f"Invalid epsilon value: {group['eps']}")
        for index, beta in enumerate(group["betas"]):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"Invalid beta parameter at index {index}: {beta}")
    return group


def direct_optimizer_for(factory, hyperparameters: dict, param: torch.Tensor):
    """A Direct* for `factory(hyperparameters)` over the single tensor `param` (its .grad set), or
    None: like direct_optimizer, but without building the torch.optim object (whose first
    construction in a process imports torch._dynamo: seconds). `factory` is a torch.optim class
    or a wrapper with `optimizer_class` and, if it renames arguments, `torch_arguments`."""
    optimizer_class = getattr(factory, "optimizer_class", factory)
    if optimizer_class not in (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW):
        return None
    translate = getattr(factory, "torch_arguments", None)
    options = translate(**hyperparameters) if translate is not None else dict(hyperparameters)
    try:
        group = _checked_options(optimizer_class, options)
    except KeyError:
        return None  # not an argument of the class: let the factory say what it makes of it
    group["params"] = [param]
    return _direct(optimizer_class, group)


def direct_optimizer(optimizer: torch.optim.Optimizer):
    """A Direct* stepping the single tensor of `optimizer` exactly as it would, or None."""
    if len(optimizer.param_groups) != 1:
        return None
    return _direct(type(optimizer), optimizer.param_groups[0])


def _direct(kind, group: dict):
    if len(group["params"]) != 1 or not _supported(group):
        return None
    param = group["params"][0]
    if param.device.type != "cpu" or param.dtype not in (torch.float32, torch.float64):
        return None  # CUDA's default is torch.optim's multi-tensor path: keep it there
    if param.grad is None or not param.is_contiguous() or not param.grad.is_contiguous():
        return None
    if kind is torch.optim.SGD:
        return DirectSGD(param, group)
    if kind in (torch.optim.Adam, torch.optim.AdamW) and not group.get("amsgrad"):
        decoupled = kind is torch.optim.AdamW or bool(group.get("decoupled_weight_decay"))
        return DirectAdam(param, group, decoupled)
    return None
