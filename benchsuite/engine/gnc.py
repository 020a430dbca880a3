"""Guess & Check: exact rejection sampling of interpolating networks from the weight prior.

A candidate is accepted iff it classifies every training point right under the suite's tie rule
(benchsuite.stacked.correct_counts: "argmax", the reference code's rule, gives a tie to class 0;
"strict" counts a tie as wrong). Accepted networks are therefore i.i.d. draws from
prior | (training error = 0), and accepted / tried estimates P(training error = 0).

Candidates and the random stream
--------------------------------
Draw d's parameters are a pure function of (seed, d) (benchsuite.engine.random: Philox keyed by the
seed, counter = d * B + b for the draw's blocks b < B), identical on CPU and CUDA. Candidate c is draw c // 2, with the two rows of its output layer
swapped when c is odd. With ``output_swap`` on, both candidates of every draw are decided; with it
off only the even ones are tried. Either way a network is regenerated from (seed, found_at) alone
(`regenerate`), and results do not depend on chunk size. `candidates_tried` is the number of
candidates decided, in candidate order, up to and including the last accepted one (or the whole
budget when it runs out): exactly what a one-at-a-time sampler would have counted.

Output swap is exact
--------------------
Let theta be a draw and S(theta) the same parameters with the two rows of the output layer
exchanged (the output layer has no drawn bias; a zero bias is unchanged by S). (1) S preserves the
prior: the rows are i.i.d., so S(theta) has the same distribution as theta, and S is an involution.
(2) S swaps the logits: f_S(theta)(x) = (f_theta(x)_1, f_theta(x)_0) for every x, because the two
logits are the two rows applied to the same penultimate features (checked at run time on the
actual module; the trick is switched off if it does not hold). So "S(theta) fits" is decided
from theta's own logits read exchanged, under the same tie rule (correct_counts(swapped=True)).
(3) theta and S(theta) cannot both fit: on a label-1 point theta needs l1 > l0 and S(theta) needs
l0 > l1, under either rule (under "strict" a label-0 point excludes it as well; under "argmax" a
label-0 point does not, as an all-tie network would satisfy both, so the trick is switched off
when the training set has no label-1 point). Hence each draw yields at most one accepted network,
draws are i.i.d., and for any set A of networks
    P(accepted in A | draw yields one) = [P(theta in A, fit) + P(S theta in A, S theta fits)]
                                         / [P(fit) + P(S theta fits)] = P(theta in A | fit),
using (1) on the second terms. The accepted networks are i.i.d. prior | fit and
E[accepted] / candidates = 2 P(fit) / 2 = P(fit): counting both candidates keeps the rate exact.

Staged early rejection
----------------------
A draw can only yield a fit if it, or its output swap, is right on all points, so it is
first evaluated on a few points; draws that are mixed there are decided (both candidates rejected)
and only survivors continue. Each point's logits do not depend on which other points share the
batch, so the decision is the full-forward decision (up to float32 rounding: a BLAS kernel may
sum in another order for another batch shape, which can only matter for a candidate whose logit
margin is within ~1e-6 relative of zero). Not used with BatchNorm (train-mode statistics couple
all N points); such modules take one full forward per chunk. ``early_rejection="auto"`` stages
only where it was measured to pay (resolve_early_rejection).

Confirmation in the host's arithmetic
-------------------------------------
Every candidate a chunk accepts is rebuilt from (seed, index) and re-checked with the host's own
evaluation (benchsuite.stacked.accuracy, eval mode, BatchNorm calibrated); only candidates that
fit in both are accepted. On CPU the two always agree. On CUDA, kernels are chosen by batch size
(cuDNN convolution algorithms round differently), so a near-tie could flip between the chunked
forward and the host's re-check (seen once: LeNet w=1, N=26, one point of 26). Acceptance is then
"fits in both", still a deterministic function of the candidate, so sampling stays exact
rejection sampling and every stored network passes the host's check.

Nested reuse across N
---------------------
Training sets are nested in N and the runner gives cells that differ only in N the same seed. A
candidate that fits a superset of points fits every subset, so the decisions of candidates
[0, R) on a point set S determine, for a superset S', that only the candidates accepted on S can
fit S'. The process-level cache (`DecisionCache`) keeps, per (seed, module structure, prior,
output_swap, tie rule), the accepted candidates on S below R; a later request whose points contain S
re-checks those on all its points and continues from R. The result is identical to a run
without the cache (tested).
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from benchsuite.engine import function_space as fs
from benchsuite.engine import random as rng
from benchsuite.engine import triton_rng
from benchsuite.engine.layout import Layout, build_layout, materialize
from benchsuite.engine.sequential import SequentialPlan
from benchsuite.protocol import DEFAULT_TIE_RULE
from benchsuite.records import Population, PriorSpec, SamplingRequest
from benchsuite.stacked import StackedForward, accuracy, correct_counts

DEFAULTS: dict[str, Any] = {
    "chunk_size": "auto",  # candidates per chunk, or "auto" (from free device memory)
    "output_swap": True,  # decide the output-row swap of every draw too (2 candidates per draw)
    # decide on a few points first, continue with survivors: True, False or "auto" (where it pays)
    "early_rejection": "auto",
    "memory_fraction": 0.5,  # share of free device memory a chunk may use (any chunk_size)
    "reuse_nested": True,  # reuse decisions made on a subset of the training points (same seed)
    "fast_path": True,  # specialised matmul/conv forward for plain Sequentials (else vmap)
    "cpu_threads": "auto",  # worker threads on CPU ("auto": the CPUs this process may use)
    # Gaussian priors only: draw the first layer's pre-activations on the training points
    # (function_space.py); networks are then rebuilt with regenerate_function_space (needs x_train)
    "function_space": False,
}
# Options that change speed only: the accepted networks and candidates tried are identical for
# every value (tested), so they are not part of a cell's identity. output_swap and function_space
# change which candidates are drawn, so they are.
PERFORMANCE_OPTIONS = frozenset(
    {"chunk_size", "early_rejection", "memory_fraction", "reuse_nested", "fast_path", "cpu_threads"}
)


CPU_PIECE_BYTES = 1 << 20  # random words generated and converted at a time (stays in L2)


def _has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


# ---------------------------------------------------------------------------------------------
# Generating draws


def _convert_cpu(
    words: np.ndarray, layout: Layout, out: dict[str, torch.Tensor], rows: slice
) -> None:
    """uint64 words [b, W] -> the float parameters of rows `rows` of `out` (random.py's mapping).

    In place on `words`: each int32 half s becomes the odd integer (s >> 7) | 1; a uniform entry is
    then one float32 multiply (exact int32 -> float32 conversion, one rounding of the product).
    """
    t = words.view(np.int32)  # little-endian: low half first, as random.py specifies
    np.right_shift(t, 7, out=t)
    np.bitwise_or(t, 1, out=t)
    for e in layout.entries:
        if e.name not in out:
            continue
        dest = out[e.name][rows].reshape(t.shape[0], -1)
        if e.kind == "zero":
            dest.zero_()
            continue
        src = t[:, e.offset : e.offset + e.count]
        if e.kind == "uniform":
            np.multiply(
                src,
                np.float32(e.scale * 2.0**-24),
                out=dest.numpy(),
                dtype=np.float32,
                casting="unsafe",
            )
            if e.center:
                dest.add_(torch.tensor(e.center, dtype=torch.float32))
        else:
            pairs = torch.from_numpy(t[:, e.offset : e.offset + e.count + (e.count % 2)].copy())
            dest.copy_(rng.normal_from_odd(pairs, e.scale)[:, : e.count])


def _convert_torch(words: torch.Tensor, layout: Layout, out: dict[str, torch.Tensor]) -> None:
    odd = rng.odd_integers(words)
    values = materialize(layout, odd, names=set(out))
    for name, value in values.items():
        out[name].copy_(value)


def empty_parameters(layout: Layout, draws: int, device, names=None) -> dict[str, torch.Tensor]:
    return {
        e.name: torch.empty((draws, *e.shape), dtype=torch.float32, device=device)
        for e in layout.entries
        if names is None or e.name in names
    }


def generate_range(
    layout: Layout,
    seed: int,
    first_draw: int,
    draws: int,
    out: dict[str, torch.Tensor],
    rows: slice | None = None,
) -> None:
    """Fill rows of `out` (per-parameter float32 [.., *shape]) with draws first_draw, ...."""
    rows = rows if rows is not None else slice(0, draws)
    device = next(iter(out.values())).device
    if device.type == "cpu":
        # one Philox object for the range, consumed a few draws at a time: each piece is
        # converted while it is still in cache, and small pieces avoid page-faulting fresh memory
        bit_generator = rng.numpy_stream(seed, first_draw, layout.words)
        piece = max(1, CPU_PIECE_BYTES // (8 * layout.words))
        first = rows.start or 0
        for a in range(0, draws, piece):
            b = min(draws, a + piece)
            words = bit_generator.random_raw((b - a) * layout.words).reshape(b - a, layout.words)
            _convert_cpu(words, layout, out, slice(first + a, first + b))
    else:
        indices = torch.arange(first_draw, first_draw + draws, device=device, dtype=torch.int64)
        words = rng.torch_words(seed, indices, layout.words)
        _convert_torch(words, layout, {k: v[rows] for k, v in out.items()})


def generate(
    layout: Layout, seed: int, first_draw: int, draws: int, device: torch.device, names=None
) -> dict[str, torch.Tensor]:
    """Stacked parameters [draws, *shape] of draws first_draw, ... (only `names` if given).

    On CUDA with Triton, one fused kernel writes all numbers of the chunk ([draws, numbers],
    draw-major) and each parameter is a strided view into it; uniform scales other than 1 are one
    in-place multiply (exact: t * 2**-24 is exact, so one rounding as on CPU).
    """
    if device.type == "cuda" and triton_rng.available(device):
        flat = triton_rng.uniform_rows(seed, first_draw, draws, layout.words, device)
        out = {}
        for e in layout.entries:
            if names is not None and e.name not in names:
                continue
            if e.kind == "zero":
                out[e.name] = torch.zeros((draws, *e.shape), device=device)
                continue
            if e.kind == "normal":  # Box-Muller on the exact odd integers t = v * 2**24
                t = (flat[:, e.offset : e.offset + e.count + e.count % 2] * 2.0**24).to(torch.int32)
                out[e.name] = rng.normal_from_odd(t, e.scale)[:, : e.count].reshape(draws, *e.shape)
                continue
            view = flat[:, e.offset : e.offset + e.count].unflatten(1, e.shape)
            if e.scale != 1.0:
                view.mul_(torch.tensor(e.scale, dtype=torch.float32, device=device))
            if e.center:
                view.add_(torch.tensor(e.center, dtype=torch.float32, device=device))
            out[e.name] = view
        return out
    out = empty_parameters(layout, draws, device, names)
    generate_range(layout, seed, first_draw, draws, out)
    return out


def draw_parameters(
    layout: Layout, seed: int, draws, device: torch.device, names=None
) -> dict[str, torch.Tensor]:
    """Stacked parameters of the given draw indices (unswapped), in the given order."""
    draws = torch.as_tensor(list(draws) if isinstance(draws, range) else draws, dtype=torch.int64)
    draws = draws.flatten()
    device = torch.device(device)
    out = empty_parameters(layout, draws.numel(), device, names)
    if device.type == "cpu":
        for row, d in enumerate(draws.tolist()):
            generate_range(layout, seed, d, 1, out, slice(row, row + 1))
    else:
        words = rng.torch_words(seed, draws.to(device), layout.words)
        _convert_torch(words, layout, out)
    return out


def output_parameter(module: nn.Module) -> str | None:
    """Name of the weight whose two rows produce the two logits (last 2-row weight), if any."""
    name = None
    for n, p in module.named_parameters():
        if p.dim() >= 2 and p.shape[0] == 2:
            name = n
    return name


def swap_rows(parameters: dict[str, torch.Tensor], name: str, which: torch.Tensor) -> None:
    """In place: exchange rows 0 and 1 of parameters[name] for the networks where `which`."""
    if not bool(which.any()):
        return
    weight = parameters[name]
    weight[which] = weight[which].flip(1)


@torch.no_grad()
def swap_is_exact(module: nn.Module, name: str, layout: Layout, x: torch.Tensor) -> bool:
    """Run-time check of step (2) of the proof: swapping the rows swaps the two logits."""
    template = copy.deepcopy(module).eval()
    device = x.device
    params = draw_parameters(layout, 12345, range(2), device)
    buffers = {k: v.unsqueeze(0).expand(2, *v.shape).clone() for k, v in template.named_buffers()}
    forward = StackedForward(template)
    logits = forward(params, buffers, x[:4])
    swapped = {k: v.clone() for k, v in params.items()}
    swap_rows(swapped, name, torch.ones(2, dtype=torch.bool, device=device))
    other = forward(swapped, buffers, x[:4])
    return bool(torch.equal(logits.flip(-1), other)) and logits.shape[-1] == 2


# ---------------------------------------------------------------------------------------------
# Decisions


def interleaved_order(y: torch.Tensor) -> torch.Tensor:
    """Point order alternating the classes, so the first stage (2 points) sees both classes: a
    draw must be right on both or wrong on both, which rejects about half of them."""
    zeros = (y == 0).nonzero().flatten().tolist()
    ones = (y == 1).nonzero().flatten().tolist()
    order = []
    for i in range(max(len(zeros), len(ones))):
        order += ([zeros[i]] if i < len(zeros) else []) + ([ones[i]] if i < len(ones) else [])
    return torch.tensor(order, dtype=torch.int64, device=y.device)


def stage_bounds(n: int, early_rejection: bool) -> list[int]:
    """Cumulative point counts of the stages: 2, 4, 8, ..., n (or just n)."""
    if not early_rejection or n <= 2:
        return [n]
    bounds, b = [], 2
    while b < n:
        bounds.append(b)
        b *= 2
    return bounds + [n]


class Decider:
    """Decides draws: (fits, swap_fits) boolean [D]: the draw / its output swap fit all points.

    Fast path (SequentialPlan) with staged early rejection where the module allows it; otherwise
    the generic vmapped forward over all N points (BatchNorm: train mode, one batch of all N).
    """

    def __init__(
        self, module, x, y, batchnorm: bool, early_rejection: bool, fast: bool = True,
        tie_rule: str = DEFAULT_TIE_RULE,
    ):
        self.batchnorm = batchnorm
        self.tie_rule = tie_rule
        self.plan = (
            SequentialPlan(module)
            if fast and not batchnorm and SequentialPlan.supports(module)
            else None
        )
        order = interleaved_order(y)
        self.x, self.y = x[order], y[order]
        self.n = x.shape[0]
        self.stages = stage_bounds(self.n, early_rejection and not batchnorm)
        if self.plan is not None:
            self.features = self.plan.features(self.x)
            self.names = self.plan.weight_names
        else:
            self.template = copy.deepcopy(module)
            self.template.train(batchnorm)  # BN: statistics of the whole training set
            self.forward = StackedForward(self.template)
            self.buffers = dict(self.template.named_buffers())
            self.names = None  # all parameters

    def _logits(
        self, params: dict[str, torch.Tensor], lo: int, hi: int, first=None
    ) -> torch.Tensor:
        """[D, hi - lo, 2] logits on points lo..hi-1 (interleaved order)."""
        if self.plan is not None:
            weights = [params[name] for name in self.names]
            if first is not None:
                first = first[:, :, lo:hi]
            return self.plan.logit_difference(weights, self.features[lo:hi], first).transpose(1, 2)
        draws = next(iter(params.values())).shape[0]
        buffers = {
            k: v.unsqueeze(0).expand(draws, *v.shape).clone() for k, v in self.buffers.items()
        }
        return self.forward(params, buffers, self.x[lo:hi])

    def _counts(self, params, lo: int, hi: int, first=None):
        logits = self._logits(params, lo, hi, first)
        y = self.y[lo:hi]
        return (
            correct_counts(logits, y, self.tie_rule),
            correct_counts(logits, y, self.tie_rule, swapped=True),
        )

    def fits_all(self, params) -> torch.Tensor:
        right, _ = self._counts(params, 0, self.n)
        return right == self.n

    def decide(
        self, params: dict[str, torch.Tensor], first=None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`first`: optional [D, out, N] output of the leading Linear layer on all points."""
        draws = next(iter(params.values())).shape[0]
        device = next(iter(params.values())).device
        # right_all / wrong_all: the draw / its output swap right on every point decided so far
        alive = torch.arange(draws, device=device)
        right_all = torch.ones(draws, dtype=torch.bool, device=device)
        wrong_all = torch.ones(draws, dtype=torch.bool, device=device)
        lo = 0
        sub = params
        # With the leading layer already applied to all points (CPU: fused with generation) the
        # remaining layers are so cheap that extra stages cost more in op overhead than they
        # save (measured, docs/performance.md): one stage then.
        stages = [self.n] if first is not None else self.stages
        for hi in stages:
            right, wrong = self._counts(sub, lo, hi, first)
            r = right_all[alive] & (right == hi - lo)
            w = wrong_all[alive] & (wrong == hi - lo)
            right_all[alive] = r
            wrong_all[alive] = w
            keep = r | w
            lo = hi
            if hi == self.n or not bool(keep.any()):
                break
            if not bool(keep.all()):
                index = keep.nonzero().flatten()
                alive = alive[index]
                sub = {k: v.index_select(0, index) for k, v in sub.items()}
                if first is not None:
                    first = first.index_select(0, index)
        if lo < self.n:  # stopped early: nobody alive
            return torch.zeros_like(right_all), torch.zeros_like(wrong_all)
        return right_all, wrong_all


# ---------------------------------------------------------------------------------------------
# Nested reuse


@dataclass
class _CacheEntry:
    x: torch.Tensor
    y: torch.Tensor
    decided_below: int  # candidates [0, R) decided on (x, y)
    accepted: list[int]


@dataclass
class DecisionCache:
    """Process-level store of accepted candidate indices per (seed, structure, prior, points)."""

    entries: dict[tuple, list[_CacheEntry]] = field(default_factory=dict)
    max_entries_per_key: int = 8

    @staticmethod
    def key(request: SamplingRequest, output_swap: bool) -> tuple:
        structure = repr(request.module) + repr(
            [(n, tuple(p.shape)) for n, p in request.module.named_parameters()]
        )
        prior = (
            request.prior.name,
            request.prior.family,
            tuple(float(request.prior.scale(f)) for f in (1, 3, 25, 196, 1000)),
        )
        function_space = bool(request.options.get("function_space", False))
        return (
            int(request.seed),
            structure,
            prior,
            bool(output_swap),
            request.tie_rule,
            function_space,
            tuple(request.x_train.shape[1:]),
        )

    def lookup(self, key, x: torch.Tensor, y: torch.Tensor) -> _CacheEntry | None:
        best = None
        for entry in self.entries.get(key, []):
            if entry.x.shape[0] > x.shape[0] or not _is_subset(entry.x, entry.y, x, y):
                continue
            if best is None or entry.decided_below > best.decided_below:
                best = entry
        return best

    def store(self, key, x, y, decided_below: int, accepted: list[int]) -> None:
        bucket = self.entries.setdefault(key, [])
        for entry in bucket:
            if (
                entry.x.shape == x.shape
                and torch.equal(entry.x, x.cpu())
                and torch.equal(entry.y, y.cpu())
            ):
                if decided_below > entry.decided_below:
                    entry.decided_below, entry.accepted = decided_below, list(accepted)
                return
        bucket.append(
            _CacheEntry(
                x.detach().cpu().clone(), y.detach().cpu().clone(), decided_below, list(accepted)
            )
        )
        del bucket[: -self.max_entries_per_key]

    def clear(self) -> None:
        self.entries.clear()


def _is_subset(xs: torch.Tensor, ys: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> bool:
    """Every (point, label) of (xs, ys) occurs in (x, y)."""
    x = x.detach().cpu().flatten(1)
    y = y.detach().cpu()
    for point, label in zip(xs.flatten(1), ys):
        match = (x == point).all(dim=1) & (y == label)
        if not bool(match.any()):
            return False
    return True


CACHE = DecisionCache()


# ---------------------------------------------------------------------------------------------
# Chunk sizing


def _activation_numbers(module: nn.Module, x: torch.Tensor) -> int:
    """Numbers of all intermediate outputs (every submodule's) of one network on one input."""
    total = 0

    def hook(_m, _i, out):
        nonlocal total
        if isinstance(out, torch.Tensor):
            total += out.numel()

    template = copy.deepcopy(module).eval()  # a private copy: the caller's module stays untouched
    for m in template.modules():
        m.register_forward_hook(hook)
    with torch.no_grad():
        template(x[:1])
    return total


def free_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 2 << 30


def chunk_bytes_per_draw(
    layout: Layout,
    module: nn.Module,
    x: torch.Tensor,
    plan: SequentialPlan | None = None,
    staged: bool = True,
) -> int:
    """Peak bytes one draw of a chunk needs on the device (upper estimates):

    - its float32 parameters (4 B per stream number), plus a gathered copy of survivors when
      decisions are staged;
    - Gaussian entries: Box-Muller's float64 temporaries (~40 B per number);
    - the forward's intermediate outputs over all N points: fast path 8 B per per-candidate
      activation (the shared prefix is computed once); generic vmap path 12 B per activation of
      every module (temporaries and the swapped-label comparison), plus its words/odd buffers.
    """
    numbers = layout.numbers
    normal = sum(e.count for e in layout.entries if e.kind == "normal")
    n = x.shape[0]
    if plan is not None:
        per_point = _activation_numbers(nn.Sequential(*plan.layers), plan.features(x[:1]))
        return 4 * numbers * (2 if staged else 1) + 40 * normal + 8 * per_point * n + 64
    activations = _activation_numbers(module, x) * n
    return 16 * numbers + 40 * normal + 12 * activations + 64


def draws_per_chunk(
    option,
    layout: Layout,
    module,
    x,
    device,
    fraction: float,
    swap: bool,
    plan: SequentialPlan | None = None,
    staged: bool = True,
) -> int:
    """Draws per chunk: the option (in candidates) or "auto", never more than what fits
    `fraction` of the device's free memory (so an explicit size cannot run out of memory
    either). CPU chunks are capped at 256 draws: larger ones only spill out of cache."""
    per_draw = 1 if not swap else 2
    fits = int(free_memory_bytes(device) * fraction) // chunk_bytes_per_draw(
        layout, module, x, plan, staged
    )
    if option != "auto":
        return int(max(1, min(int(option) // per_draw, fits)))
    cap = 1 << 20 if device.type == "cuda" else 256
    return int(max(1, min(cap, fits)))


def resolve_early_rejection(
    option, device: torch.device, plan: SequentialPlan | None, batchnorm: bool
) -> bool:
    """ "auto": stage only where it was measured to pay (docs/performance.md). On CUDA gathering
    the survivors' weights costs more memory traffic than the skipped points save (H100: 7.0 vs
    4.9 M candidates/s without/with); on CPU with a leading Linear layer that layer is applied to
    all N points while its weights are in cache, after which the rest is too cheap to stage.
    Conv-first and generic modules on CPU are dominated by the forward, so they stage."""
    if batchnorm:
        return False
    if option != "auto":
        return bool(option)
    if device.type != "cpu":
        return False
    return plan is None or not plan.first_is_linear


# ---------------------------------------------------------------------------------------------
# The sampler


def _options(request: SamplingRequest) -> dict[str, Any]:
    unknown = set(request.options) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown gnc options {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    return {**DEFAULTS, **request.options}


class _Chunks:
    """Generates and decides ranges of draws; on CPU splits each chunk over worker threads.

    Why threads: numpy's Philox fill and torch's CPU kernels release the GIL, and a small block
    per thread keeps the freshly generated weights in cache for the first matrix product. Each
    thread computes its own counter range, so the result is independent of the split.
    """

    def __init__(
        self, layout: Layout, seed: int, decider: Decider, device: torch.device, threads: int
    ):
        self.layout, self.seed, self.decider, self.device = layout, seed, decider, device
        # functional_call re-parametrizes its (shared) template in place: the generic path is not
        # thread-safe, so only the fast path uses worker threads
        self.threads = threads if device.type == "cpu" and decider.plan is not None else 1
        self.pool = ThreadPoolExecutor(self.threads) if self.threads > 1 else None
        self.names = set(decider.names) if decider.names is not None else None

    def _one(self, first_draw: int, count: int):
        plan = self.decider.plan
        staged = len(self.decider.stages) > 1
        if self.device.type == "cpu" and plan is not None and plan.first_is_linear and not staged:
            return self._one_fused(first_draw, count)
        params = generate(self.layout, self.seed, first_draw, count, self.device, self.names)
        return self.decider.decide(params)

    def _one_fused(self, first_draw: int, count: int):
        """CPU: generate a cache-sized piece, apply the leading Linear layer to all N points at
        once (one well-shaped GEMM while the piece is in cache), then decide the whole range."""
        decider, layout = self.decider, self.layout
        params = empty_parameters(layout, count, self.device, self.names)
        first_name = decider.names[0]
        features = decider.features
        out_units = params[first_name].shape[1]
        first = torch.empty((count, out_units, features.shape[0]), dtype=torch.float32)
        bit_generator = rng.numpy_stream(self.seed, first_draw, layout.words)
        piece = max(1, CPU_PIECE_BYTES // (8 * layout.words))
        for a in range(0, count, piece):
            b = min(count, a + piece)
            words = bit_generator.random_raw((b - a) * layout.words).reshape(b - a, layout.words)
            _convert_cpu(words, layout, params, slice(a, b))
            first[a:b] = decider.plan.first_layer(params[first_name][a:b], features)
        return decider.decide(params, first)

    def decide(self, first_draw: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.pool is None or count < 2 * self.threads:
            fits, swap_fits = self._one(first_draw, count)
            return fits.cpu(), swap_fits.cpu()
        bounds = np.linspace(0, count, self.threads + 1).astype(int)
        futures = [
            self.pool.submit(self._one, first_draw + int(a), int(b - a))
            for a, b in itertools.pairwise(bounds)
            if b > a
        ]
        parts = [f.result() for f in futures]
        return torch.cat([p[0].cpu() for p in parts]), torch.cat([p[1].cpu() for p in parts])

    def recheck(self, candidates: torch.Tensor, out_name: str | None, swap: bool) -> torch.Tensor:
        """Whether each candidate fits all of the decider's points (nested reuse)."""
        params = draw_parameters(self.layout, self.seed, candidates // 2, self.device, self.names)
        if swap:
            swap_rows(params, out_name, (candidates % 2 == 1).to(self.device))
        return self.decider.fits_all(params).cpu()

    def close(self):
        if self.pool is not None:
            self.pool.shutdown()


@contextlib.contextmanager
def _torch_single_threaded(device: torch.device):
    """CPU: run torch ops on one thread (our workers give the parallelism). OpenMP barriers inside
    thousands of small ops cost milliseconds each when the machine is busy."""
    if device.type != "cpu":
        yield
        return
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def _cpu_threads(option) -> int:
    if option == "auto":
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not on Linux
            return max(1, os.cpu_count() or 1)
    return max(1, int(option))


@torch.no_grad()
def guess_and_check(request: SamplingRequest) -> Population:
    """Exact G&C: `request.target` networks from prior | 100% training accuracy (module doc)."""
    with _torch_single_threaded(torch.device(request.device)):
        return _guess_and_check(request)


def _guess_and_check(request: SamplingRequest) -> Population:
    start_time = time.perf_counter()
    opts = _options(request)
    device = torch.device(request.device)
    module = request.module
    x = request.x_train.to(device)
    y = request.y_train.to(device).long()
    layout = build_layout(module, request.prior)
    batchnorm = _has_batchnorm(module)
    out_name = output_parameter(module)
    swap = (
        bool(opts["output_swap"])
        and out_name is not None
        and bool((y == 1).any())  # proof step (3)
        and swap_is_exact(module, out_name, layout, x)
    )
    budget = int(request.max_candidates)
    draws_budget = -(-budget // 2) if swap else budget  # draws with a candidate inside the budget

    def in_budget(c: int) -> bool:
        return c < budget if swap else c // 2 < budget

    fast = bool(opts["fast_path"]) and not batchnorm and SequentialPlan.supports(module)
    plan = SequentialPlan(module) if fast else None
    staged = resolve_early_rejection(opts["early_rejection"], device, plan, batchnorm)
    decider = Decider(module, x, y, batchnorm, staged, fast, request.tie_rule)
    chunk = draws_per_chunk(
        opts["chunk_size"],
        layout,
        module,
        x,
        device,
        float(opts["memory_fraction"]),
        swap,
        decider.plan,
        staged,
    )
    threads = _cpu_threads(opts["cpu_threads"]) if device.type == "cpu" else 1
    function_space = bool(opts["function_space"])
    if function_space:
        why_not = fs.applicable(decider.plan, request.prior, batchnorm)
        if why_not is not None:
            raise ValueError(f"function_space sampling does not apply: {why_not}")
        chunks = fs.FunctionSpaceSource(module, request.prior, request.seed, decider, device)
    else:
        chunks = _Chunks(layout, request.seed, decider, device, threads)
    def stacked_networks(indices: list[int]):
        if function_space:
            parameters = chunks.parameters(torch.tensor(indices, dtype=torch.int64), out_name)
            buffers = {
                n: b.detach().to(device).unsqueeze(0).expand(len(indices), *b.shape).clone()
                for n, b in module.named_buffers()
            }
            return parameters, buffers
        return regenerate(
            module, request.prior, request.seed, indices, device, x_train=x if batchnorm else None
        )

    def confirm(found: list[int]) -> list[int]:
        """The candidates that also fit in the host's canonical arithmetic (module docstring)."""
        if not found:
            return found
        parameters, buffers = stacked_networks(found)
        fits = accuracy(module.eval(), parameters, buffers, x, y, request.tie_rule) == 1.0
        return [c for c, ok in zip(found, fits.tolist()) if ok]

    try:
        accepted: list[int] = []
        next_draw = 0
        cache_key = DecisionCache.key(request, swap) if opts["reuse_nested"] else None
        if cache_key is not None:
            entry = CACHE.lookup(cache_key, x, y)
            if entry is not None:
                reuse_below = min(entry.decided_below, 2 * draws_budget)
                old = [c for c in entry.accepted if c < reuse_below]
                for i in range(0, len(old), max(1, chunk)):
                    part = torch.tensor(old[i : i + chunk], dtype=torch.int64)
                    keep = chunks.recheck(part, out_name, swap)
                    accepted.extend(confirm([int(c) for c in part[keep].tolist() if in_budget(int(c))]))
                next_draw = reuse_below // 2

        while len(accepted) < request.target and next_draw < draws_budget:
            count = min(chunk, draws_budget - next_draw)
            fits, swap_fits = chunks.decide(next_draw, count)
            draw_index = torch.arange(next_draw, next_draw + count, dtype=torch.int64)
            found = 2 * draw_index[fits]
            if swap:
                found = torch.cat([found, 2 * draw_index[swap_fits] + 1])
            accepted.extend(confirm([c for c in sorted(found.tolist()) if in_budget(c)]))
            next_draw += count
            if request.progress is not None:
                request.progress(
                    min(len(accepted), request.target),
                    _tried(accepted, request.target, next_draw, swap, budget),
                )
    finally:
        chunks.close()

    if cache_key is not None:
        CACHE.store(cache_key, x, y, 2 * next_draw, accepted)
    accepted = accepted[: request.target]
    tried = _tried(accepted, request.target, next_draw, swap, budget)
    parameters, buffers = stacked_networks(accepted)
    return Population(
        parameters=parameters,
        buffers=buffers,
        found_at=torch.tensor(accepted, dtype=torch.int64),
        candidates_tried=int(tried),
        seconds=time.perf_counter() - start_time,
        exhausted=len(accepted) < request.target,
    )


def _tried(accepted: list[int], target: int, next_draw: int, swap: bool, budget: int) -> int:
    """Candidates decided in candidate order up to the target-th acceptance (or all so far)."""
    if len(accepted) >= target > 0:
        last = accepted[target - 1]
        return last + 1 if swap else last // 2 + 1
    return min(budget, 2 * next_draw if swap else next_draw)


def regenerate(
    module: nn.Module,
    prior: PriorSpec,
    seed: int,
    indices,
    device: torch.device | str = "cpu",
    x_train: torch.Tensor | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Stacked (parameters, buffers) of candidates `indices` of stream `seed` (found_at values).

    Candidate c is draw c // 2, with the output rows swapped when c is odd. For modules with
    BatchNorm, pass x_train: buffers then hold the training-set statistics (calibrate_batchnorm).
    """
    device = torch.device(device)
    with _torch_single_threaded(device):
        return _regenerate(module, prior, seed, indices, device, x_train)


def _regenerate(module, prior, seed, indices, device, x_train):
    indices = torch.as_tensor(indices, dtype=torch.int64).flatten()
    layout = build_layout(module, prior)
    k = indices.numel()
    if k:
        params = draw_parameters(layout, seed, indices // 2, device)
        name = output_parameter(module)
        odd = (indices % 2 == 1).to(device)
        if bool(odd.any()):
            if name is None:
                raise ValueError("odd candidate indices need a module with a 2-row output layer")
            swap_rows(params, name, odd)
    else:
        params = {
            n: torch.empty((0, *p.shape), device=device) for n, p in module.named_parameters()
        }
    buffers = {
        n: b.detach().to(device).unsqueeze(0).expand(k, *b.shape).clone()
        for n, b in module.named_buffers()
    }
    if x_train is not None and _has_batchnorm(module) and k:
        from benchsuite.batchnorm import calibrate_batchnorm

        buffers = calibrate_batchnorm(module.to(device), params, buffers, x_train.to(device))
    return params, buffers


def regenerate_function_space(
    module: nn.Module,
    prior: PriorSpec,
    seed: int,
    indices,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    device: torch.device | str = "cpu",
) -> dict[str, torch.Tensor]:
    """Parameters of candidates `indices` found with function_space=True (needs the training
    set: the first layer is conditioned on its pre-activations there)."""
    device = torch.device(device)
    x, y = x_train.to(device), y_train.to(device).long()
    decider = Decider(module, x, y, False, True)
    source = fs.FunctionSpaceSource(module, prior, seed, decider, device)
    return source.parameters(torch.as_tensor(indices, dtype=torch.int64), output_parameter(module))
