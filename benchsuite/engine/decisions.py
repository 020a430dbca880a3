"""Guess & Check's decisions: which draws (and their output swaps) fit every training point.

A draw can only yield a fit if it, or its output swap, is right on all points, so it is
first evaluated on a few points; draws that are mixed there are decided (both candidates rejected)
and only survivors continue. Each point's logits do not depend on which other points share the
batch, so the decision is the full-forward decision (up to float32 rounding: a BLAS kernel may
sum in another order for another batch shape, which can only matter for a candidate whose logit
margin is within ~1e-6 relative of zero). Not used with BatchNorm (train-mode statistics couple
all N points); such modules take one full forward per chunk, on CPU through BatchNormPlan
(batchnorm_gnc.py) where it applies. ``early_rejection="auto"`` stages only where it was measured
to pay (resolve_early_rejection).
"""

from __future__ import annotations

import copy

import torch

from benchsuite.engine.batchnorm_gnc import BatchNormPlan
from benchsuite.engine.sequential import SequentialPlan
from benchsuite.protocol import DEFAULT_TIE_RULE
from benchsuite.stacked import StackedForward, correct_counts


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

    Fast path (SequentialPlan) with staged early rejection where the module allows it; BatchNorm
    modules on CPU through BatchNormPlan; otherwise the generic vmapped forward over all N points
    (BatchNorm: train mode, one batch of all N).
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
        self.batchnorm_plan = BatchNormPlan.of(module, self.x) if fast and batchnorm else None
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
        if self.batchnorm_plan is not None:
            return self.batchnorm_plan.logits(params)[:, lo:hi]
        draws = next(iter(params.values())).shape[0]
        buffers = {
            k: v.unsqueeze(0).expand(draws, *v.shape).clone() for k, v in self.buffers.items()
        }
        return self.forward(params, buffers, self.x[lo:hi])

    @property
    def thread_safe(self) -> bool:
        """Whether chunks may be decided on several threads at once (the generic path
        re-parametrizes one shared template in place: no)."""
        return self.plan is not None or self.batchnorm_plan is not None

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
