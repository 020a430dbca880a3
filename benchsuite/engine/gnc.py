"""Guess & Check: exact rejection sampling of interpolating networks from the weight prior.

A candidate is accepted iff it classifies every training point right under the suite's tie rule
(benchsuite.stacked.correct_counts: "argmax", the reference code's rule, gives a tie to class 0;
"strict" counts a tie as wrong). Accepted networks are therefore i.i.d. draws from
prior | (training error = 0), and accepted / tried estimates P(training error = 0).

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

Confirmation in the host's arithmetic
-------------------------------------
Every candidate a chunk accepts is rebuilt from (seed, index) and re-checked with the host's own
evaluation (benchsuite.stacked.accuracy, eval mode, BatchNorm calibrated); only candidates that
fit in both are accepted. On CPU the two always agree. On CUDA, kernels are chosen by batch size
(cuDNN convolution algorithms round differently), so a near-tie could flip between the chunked
forward and the host's re-check (seen once: LeNet w=1, N=26, one point of 26). Acceptance is then
"fits in both", still a deterministic function of the candidate, so sampling stays exact
rejection sampling and every stored network passes the host's check.

The parts, one job each: draws.py (a candidate from (seed, index); regenerate), decisions.py (fit
or not, staged), reuse.py (nested reuse across N), sizing.py (chunks), threads.py (CPU threads).
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from benchsuite.batchnorm import has_batchnorm
from benchsuite.engine import function_space as fs
from benchsuite.engine.decisions import Decider
from benchsuite.engine.draws import (
    draw_parameters,
    generate,
    output_parameter,
    regenerate,
    swap_is_exact,
    swap_rows,
)
from benchsuite.engine.evaluation import accuracy
from benchsuite.engine.layout import Layout, build_layout
from benchsuite.engine.leading_linear import LeadingLinear
from benchsuite.engine.reuse import DecisionCache
from benchsuite.engine.sequential import SequentialPlan
from benchsuite.engine.sizing import draws_per_chunk, resolve_early_rejection
from benchsuite.engine.threads import cpu_threads, torch_single_threaded, worker_pool
from benchsuite.records import Population, PriorSpec, SamplingRequest

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
        self.threads = threads if device.type == "cpu" and decider.thread_safe else 1
        self.pool = worker_pool(self.threads) if self.threads > 1 else None
        self.names = set(decider.names) if decider.names is not None else None
        plan = decider.plan
        fused = device.type == "cpu" and plan is not None and plan.first_is_linear
        self.leading = (  # CPU, leading Linear layer, one stage: generation fused with it
            LeadingLinear(layout, plan, decider.features, decider.names)
            if fused and len(decider.stages) == 1
            else None
        )

    def _one(self, first_draw: int, count: int):
        if self.leading is not None:
            return self._one_fused(first_draw, count)
        params = generate(self.layout, self.seed, first_draw, count, self.device, self.names)
        return self.decider.decide(params)

    def _one_fused(self, first_draw: int, count: int):
        """CPU, leading Linear layer: generation fused with it (engine/leading_linear.py), then
        the decision of the whole range on the later layers."""
        decider = self.decider
        params, first = self.leading.generate(self.seed, first_draw, count)
        # the leading weights are not kept (only their product): a zero-width stand-in
        params[decider.names[0]] = first.new_empty((count, first.shape[1], 0))
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


@torch.no_grad()
def guess_and_check(request: SamplingRequest, cache: DecisionCache | None = None) -> Population:
    """Exact G&C: `request.target` networks from prior | 100% training accuracy (module doc).

    `cache` keeps decisions for nested reuse across calls (reuse.py); without one nothing is
    reused, which changes speed only.
    """
    with torch_single_threaded(torch.device(request.device)):
        return _guess_and_check(request, cache)


class GuessAndCheck:
    """The `gnc` sampler: guess_and_check with a decision cache that lives as long as it does."""

    def __init__(self, cache: DecisionCache | None = None):
        self.cache = cache if cache is not None else DecisionCache()

    def __call__(self, request: SamplingRequest) -> Population:
        return guess_and_check(request, self.cache)


def _guess_and_check(request: SamplingRequest, cache: DecisionCache | None) -> Population:
    start_time = time.perf_counter()
    opts = _options(request)
    device = torch.device(request.device)
    module = request.module
    x = request.x_train.to(device)
    y = request.y_train.to(device).long()
    layout = build_layout(module, request.prior)
    batchnorm = has_batchnorm(module)
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
    decider = Decider(module, x, y, batchnorm, staged, bool(opts["fast_path"]), request.tie_rule)
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
    threads = cpu_threads(opts["cpu_threads"]) if device.type == "cpu" else 1
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
        cache_key = DecisionCache.key(request, swap) if opts["reuse_nested"] and cache is not None else None
        if cache_key is not None:
            entry = cache.lookup(cache_key, x, y)
            if entry is not None:
                reuse_below = min(entry.decided_below, 2 * draws_budget)
                old = [c for c in entry.accepted if c < reuse_below]
                for i in range(0, len(old), max(1, chunk)):
                    part = torch.tensor(old[i : i + chunk], dtype=torch.int64)
                    keep = chunks.recheck(part, out_name, swap)
                    accepted.extend(confirm([int(c) for c in part[keep].tolist() if in_budget(int(c))]))
                next_draw = reuse_below // 2

        # found candidates are confirmed in batches (each confirmation call costs milliseconds
        # of set-up), and always before the target could be reached or the loop ends: the same
        # chunks are decided and the same candidates accepted as when confirming every chunk
        pending: list[int] = []
        while len(accepted) < request.target and next_draw < draws_budget:
            count = min(chunk, draws_budget - next_draw)
            try:
                fits, swap_fits = chunks.decide(next_draw, count)
            except MEMORY_ERRORS as error:
                chunk = halved_chunk(chunk, error, device)  # decisions do not depend on it
                continue
            draw_index = torch.arange(next_draw, next_draw + count, dtype=torch.int64)
            found = 2 * draw_index[fits]
            if swap:
                found = torch.cat([found, 2 * draw_index[swap_fits] + 1])
            pending.extend(c for c in sorted(found.tolist()) if in_budget(c))
            next_draw += count
            if (
                len(pending) >= CONFIRM_BATCH
                or len(accepted) + len(pending) >= request.target
                or next_draw >= draws_budget
            ):
                accepted.extend(confirm(pending))
                pending.clear()
            if request.progress is not None:  # found so far (on CPU confirmation always agrees)
                found_so_far = accepted + pending
                request.progress(
                    min(len(found_so_far), request.target),
                    _tried(found_so_far, request.target, next_draw, swap, budget),
                )
    finally:
        chunks.close()

    if cache_key is not None:
        cache.store(cache_key, x, y, 2 * next_draw, accepted)
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


CONFIRM_BATCH = 64  # found candidates confirmed together (_guess_and_check)

# What running out of memory raises: torch on a device (OutOfMemoryError), torch's CPU allocator
# (a RuntimeError), numpy while filling random words (MemoryError).
MEMORY_ERRORS = (torch.OutOfMemoryError, MemoryError, RuntimeError)


def halved_chunk(chunk: int, error: BaseException, device: torch.device) -> int:
    """The chunk to retry with after `error`: half of it when memory ran out (and memory freed),
    else the error again. A chunk of one draw that does not fit is a real failure."""
    out_of_memory = isinstance(error, (torch.OutOfMemoryError, MemoryError)) or (
        "can't allocate memory" in str(error) or "out of memory" in str(error).lower()
    )
    if not out_of_memory or chunk <= 1:
        raise error
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return chunk // 2


def _tried(accepted: list[int], target: int, next_draw: int, swap: bool, budget: int) -> int:
    """Candidates decided in candidate order up to the target-th acceptance (or all so far)."""
    if len(accepted) >= target > 0:
        last = accepted[target - 1]
        return last + 1 if swap else last // 2 + 1
    return min(budget, 2 * next_draw if swap else next_draw)




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
