"""Random interpolators beyond Guess & Check's reach: subset simulation over the nested training sets.

Target: the prior conditioned on fitting all N training points, the distribution G&C samples
exactly, at N where G&C's acceptance probability is far too small to wait for.

Algorithm (Au & Beck 2001, "subset simulation"; an SMC sampler with indicator likelihoods):
the training sets are nested (the n-point set is the first n/2 images of each class, so in
decisions.interleaved_order the n-point set is a prefix), giving nested events
F_0 ⊇ F_1 ⊇ ... ⊇ F_N, F_n = "fits the first n points". The levels between them are chosen by
adaptive multilevel splitting on a continuous score (points fitted, then the margin on the
first failed point; `next_level`): the particles at or below the K-th smallest score are killed,
the survivors' share (at most `survival`) estimates the level's conditional probability.
Survivors are resampled to M particles, and every particle is moved by a Markov kernel that
leaves prior | level invariant: preconditioned Crank-Nicolson on a Gaussian
reparametrization of the prior (z ~ N(0, I); a uniform weight is center + scale * erf(z / sqrt 2),
a Gaussian one scale * z),

    z' = sqrt(1 - beta^2) z + beta xi,   xi ~ N(0, I),   accepted iff the network of z' is in the level.

pCN is reversible with respect to N(0, I), so with an indicator target the Metropolis-Hastings
rule reduces to "accept iff the proposal still fits"; beta adapts towards `target_acceptance`.
The product of the level shares estimates P(F_N); `repeats` independent runs give the interval.

Why it is exact in the limit: each stage's particles are (approximately) i.i.d. prior | F_n,
survivors of them are prior | F_n', resampling keeps that law, and the kernel preserves it; as M
and the number of moves grow, the final particles converge in law to prior | F_N and the
estimator's relative bias (from choosing levels from the same population) vanishes. For finite M
the particles of one repeat are correlated through their common ancestors: the diagnostics say
how much (unique ancestors, acceptance rates, agreement between repeats), and the host marks a
cell whose diagnostics fail as unreliable. BatchNorm networks are not supported: their fit on the
n-point set depends on the statistics of that set, so the events are not nested.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from benchsuite.batchnorm import has_batchnorm
from benchsuite.engine.decisions import interleaved_order
from benchsuite.engine.layout import Layout, build_layout
from benchsuite.engine.sequential import SequentialPlan
from benchsuite.engine.threads import torch_single_threaded
from benchsuite.records import Population, SamplingRequest
from benchsuite.stacked import StackedForward

DEFAULTS: dict[str, Any] = {
    "particles": 512,  # M, per repeat
    "repeats": 4,  # independent runs: the interval of -log2 P(fit) and the agreement check
    "moves": 24,  # pCN sweeps over the population after each resampling
    "final_moves": 48,  # extra sweeps at the last level, to decorrelate the delivered networks
    "survival": 0.5,  # target share of survivors when choosing the next level
    "target_acceptance": 0.3,  # pCN step size adapts towards this acceptance rate
    "initial_step": 0.5,  # beta at the first level
    "particles_per_call": 256,  # networks evaluated at once (memory; speed only)
}
PERFORMANCE_OPTIONS = frozenset({"particles_per_call"})
MIN_STEP, MAX_STEP = 1e-3, 1.0
SQRT_HALF = math.sqrt(0.5)


# ---------------------------------------------------------------------------------------------
# The prior as a transform of a standard Gaussian


@dataclass(frozen=True)
class GaussianReparametrization:
    """z [K, dimensions] ~ N(0, I) -> the prior's stacked parameters, entry by entry."""

    layout: Layout
    slices: tuple[tuple[str, int, int], ...]  # (name, start, stop) in z for drawn entries
    dimensions: int

    @classmethod
    def of(cls, layout: Layout) -> GaussianReparametrization:
        slices, start = [], 0
        for entry in layout.entries:
            if entry.kind != "zero":
                slices.append((entry.name, start, start + entry.numel))
                start += entry.numel
        return cls(layout, tuple(slices), start)

    def parameters(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        count = z.shape[0]
        where = {name: (a, b) for name, a, b in self.slices}
        out = {}
        for entry in self.layout.entries:
            if entry.kind == "zero":
                out[entry.name] = torch.zeros((count, *entry.shape), device=z.device)
                continue
            a, b = where[entry.name]
            values = z[:, a:b] * (SQRT_HALF if entry.kind == "uniform" else entry.scale)
            if entry.kind == "uniform":  # center + scale * erf(z / sqrt 2), in place: the same
                values.erf_().mul_(entry.scale).add_(entry.center)  # roundings, one tensor
            out[entry.name] = values.reshape(count, *entry.shape)
        return out


# ---------------------------------------------------------------------------------------------
# Margins on the nested order, and the levels between the prior and the fit


class NestedFit:
    """Margins l_y - l_other of stacked networks on the leading points of the nested order."""

    def __init__(self, module: nn.Module, x: torch.Tensor, y: torch.Tensor, tie_rule: str, per_call: int):
        order = interleaved_order(y)
        self.x, self.y = x[order], y[order]
        self.tie_rule, self.per_call = tie_rule, int(per_call)
        self.plan = SequentialPlan(module) if SequentialPlan.supports(module) else None
        if self.plan is not None:
            self.features = self.plan.features(self.x)
            self.names = self.plan.weight_names
        else:
            self.template = module.eval()
            self.forward = StackedForward(self.template)
            self.buffers = dict(self.template.named_buffers())

    def _logits(self, parameters: dict[str, torch.Tensor], n: int) -> torch.Tensor:
        if self.plan is not None:
            weights = [parameters[name] for name in self.names]
            return self.plan.logit_difference(weights, self.features[:n]).transpose(1, 2)
        count = next(iter(parameters.values())).shape[0]
        buffers = {k: v.unsqueeze(0).expand(count, *v.shape) for k, v in self.buffers.items()}
        return self.forward(parameters, buffers, self.x[:n])

    def margins(self, parameters: dict[str, torch.Tensor], n: int) -> torch.Tensor:
        """[K, n]: logit of the true class minus the other, on the first n points."""
        count = next(iter(parameters.values())).shape[0]
        out = torch.empty(count, n, device=self.x.device)
        sign = (2 * self.y[:n] - 1).to(out.dtype)  # +1 for label 1, -1 for label 0
        for a in range(0, count, self.per_call):
            chunk = {k: v[a : a + self.per_call] for k, v in parameters.items()}
            logits = self._logits(chunk, n)
            out[a : a + self.per_call] = sign * (logits[..., 1] - logits[..., 0])
        return out

    def right(self, margins: torch.Tensor) -> torch.Tensor:
        """[K, n] bool from margins, under the tie rule (as benchsuite.stacked.correct_counts:
        a tie is right for label 0 under argmax and wrong otherwise; NaN is always wrong)."""
        n = margins.shape[1]
        if self.tie_rule == "argmax":
            return torch.where(self.y[:n].bool(), margins > 0, margins >= 0)
        return margins > 0

    def satisfies(self, parameters: dict[str, torch.Tensor], level: Level) -> torch.Tensor:
        """[K] bool: the networks inside the level's event."""
        margins = self.margins(parameters, level.points + (level.threshold is not None))
        right = self.right(margins)
        ok = right[:, : level.points].all(dim=1)
        if level.threshold is not None:  # as `scores` orders them: the next point right, or nearer
            ok &= right[:, level.points] | (_finite(margins[:, level.points]) > level.threshold)
        return ok


@dataclass(frozen=True)
class Level:
    """The event "score > (points, threshold)" (score: see `scores`) or, without a threshold,
    "fits the first `points` points". With a threshold t <= 0: fits the first `points` points
    and the next one too, or its margin there exceeds t. Each next level is inside the
    previous; the last is (N, None): fits the whole training set."""

    points: int
    threshold: float | None = None


def _finite(margins: torch.Tensor) -> torch.Tensor:
    """Margins with NaN as -inf: a NaN logit is never right (`NestedFit.right`), so it ranks lowest."""
    return torch.nan_to_num(margins, nan=-math.inf, posinf=math.inf, neginf=-math.inf)


def scores(margins: torch.Tensor, right: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """([K] int64, [K] float) ordered lexicographically: the leading points fitted f, then the
    margin on the failed point f + 1 (<= 0 there; 0 for a network that fits all N points).
    Monotone in how far a network got, and continuous in its second part, so that few particles
    share a score.

    Kept as a pair, not summed into one number: with the large logits of wide networks under
    U[-1, 1], exp(margin) vanished beside f in float64, every survivor scored f exactly, the
    next level equalled the last, and the run never ended (MLP width 1, depth 4, N = 32)."""
    n_total = right.shape[1]
    fitted = right.to(torch.int64).cumprod(dim=1).sum(dim=1)
    failed = fitted.clamp(max=n_total - 1).unsqueeze(1)
    partial = _finite(margins.gather(1, failed).squeeze(1)).clamp(max=0.0)
    return fitted, torch.where(fitted >= n_total, torch.zeros_like(partial), partial)


def next_level(margins: torch.Tensor, right: torch.Tensor, level: Level, survival: float) -> Level:
    """The next level from the current population by adaptive multilevel splitting: with
    K = M - ceil(survival M) + 1 and z the K-th smallest score, the next level is "score > z":
    every particle scoring z or less is killed, ties at z included, as the unbiased generalized
    AMS requires (Bréhier, Gazeau, Goudenège, Lelièvre & Rousset, Ann. Appl. Probab. 2016).
    Where z reaches N, the last level: the share that fits all N points."""
    m, n_total = right.shape
    rank = m - math.ceil(survival * m) + 1
    fitted, partial = scores(margins, right)
    by_margin = torch.argsort(partial, stable=True)
    order = by_margin[torch.argsort(fitted[by_margin], stable=True)]
    kth = order[rank - 1]
    points = int(fitted[kth])
    if points >= n_total:
        return Level(n_total)
    return Level(points, float(partial[kth]))


# ---------------------------------------------------------------------------------------------
# One run of subset simulation


@dataclass
class SubsetRun:
    """One independent repeat: its final particles (z) and how it got there."""

    z: torch.Tensor  # [M, dimensions], all fitting the N points
    log2_p_fit: float  # sum of log2 of the level shares (-inf if a level had no survivor)
    levels: list[Level] = field(default_factory=list)
    shares: list[float] = field(default_factory=list)  # survivors' share at every level
    acceptance: list[float] = field(default_factory=list)  # mean pCN acceptance per level
    unique_parents: list[float] = field(default_factory=list)  # share of distinct survivors resampled
    steps: list[float] = field(default_factory=list)  # final beta per level
    evaluations: int = 0  # networks evaluated (on any number of points)
    proposals: int = 0  # pCN steps: particles x sweeps, over all levels

    @property
    def failed(self) -> bool:
        return not math.isfinite(self.log2_p_fit)


def subset_run(
    reparametrization: GaussianReparametrization,
    fit: NestedFit,
    n_total: int,
    settings: dict[str, Any],
    generator: torch.Generator,
    device: torch.device,
    budget: int | None = None,
) -> SubsetRun:
    """Subset simulation from the prior to the n_total-point set (module docstring)."""
    m = int(settings["particles"])
    z = torch.randn(m, reparametrization.dimensions, generator=generator, device=device)
    run = SubsetRun(z=z, log2_p_fit=0.0)
    step = float(settings["initial_step"])
    level = Level(0)
    while level != Level(n_total):
        margins = fit.margins(reparametrization.parameters(z), n_total)
        run.evaluations += m
        level = next_level(margins, fit.right(margins), level, float(settings["survival"]))
        inside = fit.satisfies(reparametrization.parameters(z), level)
        survivors = inside.nonzero().flatten()
        share = survivors.numel() / m
        run.levels.append(level)
        run.shares.append(share)
        if survivors.numel() == 0:
            run.log2_p_fit = -math.inf
            return run
        run.log2_p_fit += math.log2(share)
        parents = survivors[torch.randint(survivors.numel(), (m,), generator=generator, device=device)]
        run.unique_parents.append(parents.unique().numel() / m)
        z = z[parents]
        moves = int(settings["final_moves"] if level == Level(n_total) else settings["moves"])
        z, step, accepted = _pcn_moves(
            z, reparametrization, fit, level, moves, step, float(settings["target_acceptance"]), generator
        )
        run.evaluations += m * (moves + 1)
        run.proposals += m * moves
        run.acceptance.append(accepted)
        run.steps.append(step)
        if budget is not None and run.evaluations > budget and level != Level(n_total):
            run.z = z
            run.log2_p_fit = -math.inf  # out of budget before the last level: no estimate
            return run
    run.z = z
    return run


def _pcn_moves(z, reparametrization, fit, level, moves, step, target, generator):
    """`moves` sweeps of pCN restricted to the networks inside `level`."""
    accepted_total = 0.0
    noise, proposal = torch.empty_like(z), torch.empty_like(z)
    z = z.clone()  # moved in place
    for _ in range(moves):
        # sqrt(1 - beta^2) z + beta xi, with the roundings of that expression, into reused
        # buffers: at MLP width 1 (33k weights) the sampler's time is these elementwise passes
        torch.randn(z.shape, generator=generator, device=z.device, out=noise)
        torch.mul(z, math.sqrt(1.0 - step * step), out=proposal)
        proposal.add_(noise.mul_(step))
        ok = fit.satisfies(reparametrization.parameters(proposal), level)
        moved = ok.nonzero().flatten()
        z.index_copy_(0, moved, proposal.index_select(0, moved))
        rate = float(ok.double().mean())
        accepted_total += rate
        # Robbins-Monro on log beta: grow when accepting too often, shrink when too rarely
        step = min(MAX_STEP, max(MIN_STEP, step * math.exp(rate - target)))
    return z, step, accepted_total / max(1, moves)


# ---------------------------------------------------------------------------------------------
# The sampler


def _options(request: SamplingRequest) -> dict[str, Any]:
    unknown = set(request.options) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown subset-mcmc options {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    options = {**DEFAULTS, **request.options}
    for key in ("particles", "repeats", "moves", "final_moves", "particles_per_call"):
        if int(options[key]) < 1:
            raise ValueError(f"subset-mcmc option {key} must be at least 1, got {options[key]}")
    if not 0.0 < float(options["survival"]) < 1.0 or not 0.0 < float(options["target_acceptance"]) < 1.0:
        raise ValueError("subset-mcmc options survival and target_acceptance must lie in (0, 1)")
    if not 0.0 < float(options["initial_step"]) <= 1.0:
        raise ValueError("subset-mcmc option initial_step must lie in (0, 1]")
    return options


@torch.no_grad()
def subset_mcmc(request: SamplingRequest) -> Population:
    """`request.target` networks from prior | fit at N, by subset simulation (module docstring).

    found_at = repeat * particles + particle index; `Population.estimates` carries -log2 P(fit)
    (of the repeats' mean estimate of P, with its standard error) and the diagnostics.
    """
    device = torch.device(request.device)
    with torch_single_threaded(device):
        return _subset_mcmc(request, device)


def _subset_mcmc(request: SamplingRequest, device: torch.device) -> Population:
    started = time.perf_counter()
    options = _options(request)
    module = request.module.to(device)
    if has_batchnorm(module):
        raise ValueError("subset-mcmc does not support BatchNorm: its fit on a subset depends on "
                         "that subset's statistics, so the training sets' events are not nested")
    x, y = request.x_train.to(device), request.y_train.to(device).long()
    n_total = int(x.shape[0])
    layout = build_layout(module, request.prior)
    reparametrization = GaussianReparametrization.of(layout)
    fit = NestedFit(module, x, y, request.tie_rule, options["particles_per_call"])
    repeats, particles = int(options["repeats"]), int(options["particles"])
    budget = int(request.max_candidates)
    runs = []
    for repeat in range(repeats):
        generator = torch.Generator(device=device).manual_seed(_repeat_seed(request.seed, repeat))
        remaining = budget - sum(r.evaluations for r in runs)
        runs.append(subset_run(reparametrization, fit, n_total, options, generator, device, remaining))
        if request.progress is not None:
            request.progress(0, sum(r.evaluations for r in runs))
    finished = [r for r in runs if not r.failed]
    exhausted = len(finished) < repeats
    chosen = _spread(request.target, [particles if not r.failed else 0 for r in runs])
    found_at = torch.tensor([repeat * particles + i for repeat, i in chosen], dtype=torch.int64)
    z = (
        torch.stack([runs[repeat].z[i] for repeat, i in chosen])
        if chosen
        else torch.empty(0, reparametrization.dimensions, device=device)
    )
    parameters = reparametrization.parameters(z)
    buffers = {
        n: b.detach().to(device).unsqueeze(0).expand(len(chosen), *b.shape).clone()
        for n, b in module.named_buffers()
    }
    return Population(
        parameters=parameters,
        buffers=buffers,
        found_at=found_at,
        candidates_tried=sum(r.evaluations for r in runs),
        seconds=time.perf_counter() - started,
        exhausted=exhausted or len(chosen) < request.target,
        estimates=diagnostics(runs, particles),
        chains=torch.tensor([repeat for repeat, _ in chosen], dtype=torch.int64),
    )


def _repeat_seed(seed: int, repeat: int) -> int:
    return (int(seed) * 1_000_003 + 7919 * (repeat + 1)) % (2**63 - 1)


def _spread(target: int, available: list[int]) -> list[tuple[int, int]]:
    """(repeat, particle) pairs: `target` networks taken round-robin over the repeats, each
    repeat's particles evenly spaced (neighbours after resampling are the most alike)."""
    per_repeat = [0] * len(available)
    total = 0
    while total < target and any(p < a for p, a in zip(per_repeat, available)):
        for r, a in enumerate(available):
            if total < target and per_repeat[r] < a:
                per_repeat[r] += 1
                total += 1
    chosen = []
    for r, (count, a) in enumerate(zip(per_repeat, available)):
        chosen += [(r, (k * a) // count) for k in range(count)] if count else []
    return chosen


def diagnostics(runs: list[SubsetRun], particles: int) -> dict[str, float]:
    """What a reader needs to trust a cell: the estimate with its error, and how well it mixed."""
    finished = [r for r in runs if not r.failed]
    values = [-r.log2_p_fit for r in finished]
    out: dict[str, float] = {
        "repeats": float(len(runs)),
        "repeats_failed": float(len(runs) - len(finished)),
        "particles": float(particles),
    }
    if values:
        # Each repeat's product of shares is an unbiased estimate of P(fit); their mean is too,
        # and its -log2 is far less biased than the mean of the repeats' -log2 (Jensen: with a
        # spread of s bits between repeats the latter overstates -log2 P by about s^2 ln(2) / 2).
        ratios = [2.0 ** (min(values) - v) for v in values]  # P_r / P_max <= 1, stable
        mean_ratio = sum(ratios) / len(ratios)
        out["neg_log2_p_fit"] = min(values) - math.log2(mean_ratio)
        out["neg_log2_p_fit_mean_of_logs"] = sum(values) / len(values)
        if len(values) > 1:
            variance = sum((r - mean_ratio) ** 2 for r in ratios) / (len(ratios) - 1)
            # delta method: se of log2(mean P) = se(mean P) / (mean P ln 2)
            out["neg_log2_p_fit_se"] = math.sqrt(variance / len(ratios)) / (mean_ratio * math.log(2))
    acceptance = [a for r in finished for a in r.acceptance]
    unique = [u for r in finished for u in r.unique_parents]
    if acceptance:
        out["acceptance_min"] = min(acceptance)
        out["acceptance_mean"] = sum(acceptance) / len(acceptance)
    if unique:
        out["unique_parents_min"] = min(unique)
    if finished:
        out["levels"] = sum(len(r.levels) for r in finished) / len(finished)
        out["share_min"] = min(s for r in finished for s in r.shares)
        out["moves"] = float(sum(r.evaluations for r in finished))  # name kept for old databases
    out["evaluations"] = float(sum(r.evaluations for r in runs))
    out["pcn_steps"] = float(sum(r.proposals for r in runs))
    out.update(_between_repeats(values, finished, particles))
    return out


def _between_repeats(values: list[float], finished: list[SubsetRun], particles: int) -> dict[str, float]:
    """Do the repeats' -log2 P agree as well as independent particles would make them?

    iid_var: the variance of one repeat's -log2 P if its particles were independent at every
    level, sum of (1 - p) / (M p) over the level shares p, in bits^2 (the binomial variance of
    log p, Au & Beck 2001 eq. 19). The observed variance between the repeats is that times the
    inflation from correlated particles (their 1 + gamma). rhat_neg_log2_p = sqrt(observed /
    iid): 1 when the repeats agree as independent particles would, large when a repeat disagrees
    by more than correlation explains. ess_p_fit = repeats x M / inflation, at most repeats x M.
    """
    if len(values) < 2:
        return {}
    iid = [
        sum((1 - p) / (particles * p) for p in r.shares) / math.log(2) ** 2 for r in finished
    ]
    iid_var = sum(iid) / len(iid)
    mean = sum(values) / len(values)
    observed = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    out = {"neg_log2_p_fit_iid_se": math.sqrt(iid_var / len(values))}
    if iid_var > 0:
        ratio = observed / iid_var
        out["rhat_neg_log2_p"] = math.sqrt(ratio)
        out["ess_p_fit"] = len(values) * particles / max(1.0, ratio)
    return out
