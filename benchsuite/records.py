"""Typed records that plugins return from hooks, and the records the host passes around.

Plugins describe *what* (a dataset loader, a module factory, an optimizer factory, a prior, a
sampler); the host owns loops, devices, batching, seeds and storage.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from benchsuite.protocol import DEFAULT_TIE_RULE

if TYPE_CHECKING:  # annotations only: `import benchsuite` (a plugin's first line, the CLI) needs no torch
    import torch
    from torch import nn

# ---------------------------------------------------------------------------------------------
# Datasets


@dataclass(frozen=True)
class DataOptions:
    """Where a dataset may be read from; `download` permits a network fetch (torchvision)."""

    root: Path | None = None
    download: bool = False


@dataclass(frozen=True)
class ImageSplits:
    """A whole labelled image dataset: uint8 or [0, 1] float images shaped [n, C, H, W]."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor


@dataclass(frozen=True)
class DatasetSpec:
    """A named dataset. `load` reads the full splits (all classes); the host builds tasks from it.

    `holdout_per_class` is how many permuted indices per class are skipped before the training set
    (protocol.md: 128); small datasets such as `digits` need fewer.
    """

    name: str
    load: Callable[[DataOptions], ImageSplits]
    description: str = ""
    num_classes: int = 10
    class_names: tuple[str, ...] = ()
    holdout_per_class: int = 128
    input_shape: tuple[int, int, int] | None = None  # (C, H, W), known without loading


# ---------------------------------------------------------------------------------------------
# Architectures


@dataclass(frozen=True)
class ArchitectureSpec:
    """A named architecture: `build(input_shape, width=..., depth=..., bias=...)` -> nn.Module.

    The module maps [batch, C, H, W] to [batch, 2] logits. `width` is a multiplier or a string
    such as "1/6" or "1/6*"; `depth` an int or a variant name ("2c-1f"). The host batches many
    copies with torch.func, so a plugin writes an ordinary module.
    """

    name: str
    build: Callable[..., nn.Module]
    description: str = ""
    default_width: Any = 1
    default_depth: Any = None


# ---------------------------------------------------------------------------------------------
# Priors (initializers)


@dataclass(frozen=True)
class PriorSpec:
    """A weight prior: every weight i.i.d. from `family` with scale `scale(fan_in)`; biases zero.

    family "uniform": U[-scale, scale]; family "normal": N(0, scale**2). Kept to a family and a
    scale so that fast samplers (counter-based RNG, function-space sampling) can use it.
    BatchNorm affine parameters follow protocol.md (weight U[0.9, 1.1], bias U[-0.05, 0.05]).
    """

    name: str
    family: Literal["uniform", "normal"]
    scale: Callable[[int], float]
    description: str = ""

    def sample_(self, tensor: torch.Tensor, fan_in: int, generator: torch.Generator | None = None):
        """Fill `tensor` in place from this prior."""
        s = float(self.scale(fan_in))
        if self.family == "uniform":
            return tensor.uniform_(-s, s, generator=generator)
        return tensor.normal_(0.0, s, generator=generator)

    @property
    def symmetric(self) -> bool:
        """Both families are symmetric about zero: negating the last layer keeps the prior."""
        return True


def kaiming_uniform_bound(fan_in: int) -> float:
    """PyTorch's kaiming_uniform_ with ReLU gain sqrt(2): bound = sqrt(6 / fan_in)."""
    return math.sqrt(6.0 / fan_in)


# ---------------------------------------------------------------------------------------------
# Gradient optimizers


@dataclass(frozen=True)
class OptimizerSpec:
    """A gradient optimizer: `factory(params, **hyperparameters)` -> torch.optim.Optimizer.

    `defaults` names every hyperparameter the factory takes (with its default); the suite may set
    only these. `elementwise`: the update of each parameter entry depends only on that entry's own
    history, so one optimizer over K stacked networks equals K independent optimizers. Optimizers
    that are not (LBFGS, Shampoo, LARS, anything with a norm over a tensor) must say False; the host
    then runs one optimizer per network.
    """

    name: str
    factory: Callable[..., torch.optim.Optimizer]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    elementwise: bool = False
    description: str = ""
    # checks a suite's values at validation; raises ValueError("name: what is valid") for a value
    # training would not survive (benchsuite.ranges has helpers)
    check: Callable[[Mapping[str, Any]], None] | None = None


# ---------------------------------------------------------------------------------------------
# Random-interpolator samplers and their output


@dataclass
class Population:
    """K networks of one architecture, stacked along a leading model axis, all fitting the task.

    `parameters`/`buffers` are torch.func-style stacked state (see torch.func.stack_module_state).
    `found_at[k]` says how network k was found: its candidate index (samplers, so it can be
    regenerated from the seed) or its attempt index (gradient training).
    """

    parameters: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor]
    found_at: torch.Tensor
    candidates_tried: int
    seconds: float
    epochs: int | None = None
    exhausted: bool = False  # the budget ran out before `target` networks were found
    # Samplers that estimate rather than count (MCMC, SMC): estimates["neg_log2_p_fit"] replaces
    # -log2(found / candidates_tried), with its diagnostics beside it; `chains[k]` says which
    # independent chain network k came from (the host checks agreement between chains).
    estimates: dict[str, float] = field(default_factory=dict)
    chains: torch.Tensor | None = None

    @property
    def size(self) -> int:
        return int(self.found_at.numel())


class ProgressCallback(Protocol):
    def __call__(self, accepted: int, work: int) -> None:
        """`accepted` networks found so far; `work` candidates tried (samplers) or networks trained."""


@dataclass(frozen=True)
class SamplingRequest:
    """Everything a sampler needs for one cell. The host owns seed, device and budget."""

    module: nn.Module  # template network, on `device`
    x_train: torch.Tensor  # [N, C, H, W], normalized, on device
    y_train: torch.Tensor  # [N] in {0, 1}
    prior: PriorSpec
    target: int  # interpolating networks to deliver
    max_candidates: int  # budget
    seed: int
    device: torch.device
    options: Mapping[str, Any] = field(default_factory=dict)  # the sampler's own, validated
    progress: ProgressCallback | None = None
    # how equal logits are decided (benchsuite.protocol.TIE_RULES): a sampler must accept exactly
    # the networks that benchsuite.stacked.accuracy(..., tie_rule) says fit
    tie_rule: str = DEFAULT_TIE_RULE


@dataclass(frozen=True)
class SamplerSpec:
    """A random-interpolator baseline: `sample(SamplingRequest)` -> Population of fitting networks."""

    name: str
    sample: Callable[[SamplingRequest], Population]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    # options that change speed but never which networks are accepted (chunk sizes, threads...):
    # left out of a cell's identity and seed, so tuning them neither reruns nor redraws a cell
    performance_options: frozenset[str] = frozenset()
    # checks a suite's options at validation, like OptimizerSpec.check
    check: Callable[[Mapping[str, Any]], None] | None = None
