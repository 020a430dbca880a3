"""Function-space G&C for Gaussian priors: draw the first layer's pre-activations, not its weights.

Why: for a Linear layer with weights w_u ~ N(0, s^2 I_F) (F = fan-in) applied to the N training
inputs X [N, F], each unit's pre-activations z_u = X w_u are exactly N(0, s^2 X X^T). With
X X^T = R R^T (R [N, r], r = rank X <= N, from an eigendecomposition in float64) z_u = s R xi_u,
xi_u ~ N(0, I_r): r numbers per unit instead of F. For the paper MLP at N = 16 the first layer
(196 -> 120, 71% of all weights) needs 1,920 numbers instead of 23,520 and its matrix product
shrinks from 196 to 16 multiply-adds per unit and point. Later layers are drawn directly (their
fan-in times N would not be smaller, and direct weights keep the output-swap argument unchanged).
The decision (training fit) depends on the weights only through z, so acceptance is exact.

An accepted network needs first-layer weights for the test set: w_u | (X w_u = z_u) is Gaussian,
    w_u = X^+ z_u + (I - X^+ X) g_u,   g_u ~ N(0, s^2 I_F)
(the row-space component is fixed by z_u, the orthogonal complement keeps its prior). Computed in
float64 and rounded once to float32; z_u lies in range(X) by construction. The training logits of
the returned network equal the sampled ones up to float rounding (tests re-evaluate every accepted
network with benchsuite.stacked.accuracy, and a two-sample test compares with direct sampling).

Randomness is counter-based like the direct path: draw d's xi and later-layer weights come from
Philox under random.FUNCTION_SPACE_TAG, g_u from random.CONDITIONAL_TAG; so a network is a pure
function of (seed, d, x_train) and `regenerate_function_space` rebuilds it. These are NOT the same
networks as the direct stream's draw d (same distribution, different function of the bits).
"""

from __future__ import annotations

import torch

from benchsuite.engine import random as rng
from benchsuite.engine import triton_rng
from benchsuite.engine.layout import Entry, Layout, build_layout
from benchsuite.records import PriorSpec


def applicable(plan, prior: PriorSpec, batchnorm: bool) -> str | None:
    """None if function-space sampling applies, else why not."""
    if prior.family != "normal":
        return f"prior {prior.name!r} is not Gaussian"
    if batchnorm:
        return "module has BatchNorm"
    if plan is None or not plan.first_is_linear:
        return "module is not a plain Sequential whose first weight layer is Linear"
    return None


def _normals(odd: torch.Tensor, entry: Entry, draws: int) -> torch.Tensor:
    t = odd[:, entry.offset : entry.offset + entry.count + entry.count % 2]
    return rng.normal_from_odd(t, entry.scale)[:, : entry.count].reshape(draws, *entry.shape)


class FunctionSpaceSource:
    """Generates and decides draws in function space (see module doc); same interface as the
    direct path's source in gnc.py."""

    def __init__(self, module, prior: PriorSpec, seed: int, decider, device: torch.device):
        self.decider, self.seed, self.device = decider, int(seed), device
        plan = decider.plan
        self.names = list(decider.names)
        direct = build_layout(module, prior)
        first = direct.entry(self.names[0])
        self.sigma = first.scale
        self.units = first.shape[0]
        # on the CPU in float64 whatever the device: eigenvectors are defined up to sign (and
        # rotation within repeated eigenvalues), so one deterministic factorization keeps the
        # candidates identical on every device
        x = decider.features.reshape(decider.n, -1).detach().cpu().to(torch.float64)
        self.x64 = x
        eigenvalues, vectors = torch.linalg.eigh(x @ x.T)
        keep = eigenvalues > eigenvalues.max().clamp_min(1e-300) * 1e-12
        self.rank = int(keep.sum())
        self.root = (vectors[:, keep] * eigenvalues[keep].sqrt()).to(torch.float32)  # [N, r]
        self.pinv = torch.linalg.pinv(x)  # [F, N] float64
        self.root_device = self.root.to(device)
        entries, offset = [], 0
        xi = Entry("__xi", (self.units, self.rank), "normal", 0.0, 1.0, 0, self.units * self.rank)
        entries.append(xi)
        offset = xi.count + xi.count % 2
        for e in direct.entries:
            if e.name in self.names[1:]:
                moved = Entry(e.name, e.shape, e.kind, e.center, e.scale, offset, e.count)
                entries.append(moved)
                offset += e.count + e.count % 2
        self.layout = Layout(tuple(entries), offset)
        self.first_entry = first
        self.plan = plan

    # -- drawing ------------------------------------------------------------------------------

    def _words(self, draws: torch.Tensor | None, first_draw: int, count: int, words: int, tag: int):
        if self.device.type == "cpu":
            if draws is None:
                block = rng.numpy_words(self.seed, first_draw, count, words, tag)
                return torch.from_numpy(block.view("int64"))
            rows = [rng.numpy_words(self.seed, int(d), 1, words, tag) for d in draws.tolist()]
            import numpy as np

            return (
                torch.from_numpy(np.concatenate(rows).view("int64"))
                if rows
                else torch.empty((0, words), dtype=torch.int64)
            )
        if draws is None:
            draws = torch.arange(first_draw, first_draw + count, device=self.device)
        return rng.torch_words(self.seed, draws.to(self.device), words, tag)

    def _odd(self, draws, first_draw: int, count: int, words: int, tag: int) -> torch.Tensor:
        """int32 odd integers [D, 2 * words] (random.py) of a draw range or index list."""
        if draws is None and self.device.type == "cuda" and triton_rng.available(self.device):
            return triton_rng.odd_rows(self.seed, first_draw, count, words, self.device, tag)
        return rng.odd_integers(self._words(draws, first_draw, count, words, tag).to(self.device))

    def draw(self, first_draw: int = 0, count: int = 0, draws: torch.Tensor | None = None):
        """(z1 [D, units, N], parameters of the later layers) of a draw range or index list."""
        odd = self._odd(draws, first_draw, count, self.layout.words, rng.FUNCTION_SPACE_TAG)
        n = odd.shape[0]
        entries = {e.name: e for e in self.layout.entries}
        xi = _normals(odd, entries["__xi"], n)  # [D, units, r]
        z1 = torch.matmul(xi, self.root_device.T) * torch.tensor(
            self.sigma, dtype=torch.float32, device=self.device
        )
        params = {name: _normals(odd, entries[name], n) for name in self.names[1:]}
        params[self.names[0]] = torch.zeros((n, 1), device=self.device)  # unused placeholder
        return z1, params

    # -- the source interface used by gnc.guess_and_check ----------------------------------------

    def decide(self, first_draw: int, count: int):
        z1, params = self.draw(first_draw, count)
        fits, swap_fits = self.decider.decide(params, z1)
        return fits.cpu(), swap_fits.cpu()

    def close(self) -> None:
        pass

    def recheck(self, candidates: torch.Tensor, out_name=None, swap=True) -> torch.Tensor:
        """Whether each candidate (index, parity = swap) fits the decider's points."""
        z1, params = self.draw(draws=candidates // 2)
        fits, swap_fits = self.decider.decide(params, z1)
        odd = (candidates % 2 == 1).to(fits.device)
        return torch.where(odd, swap_fits, fits).cpu()

    def parameters(self, candidates: torch.Tensor, out_name: str | None):
        """Stacked parameters of candidates: later layers as drawn, first layer conditioned."""
        candidates = torch.as_tensor(candidates, dtype=torch.int64).flatten()
        draws = candidates // 2
        z1, params = self.draw(draws=draws)
        k = draws.numel()
        features = self.x64.shape[1]
        words = rng.words_per_draw(self.units * features)
        g_words = self._words(draws, 0, 0, words, rng.CONDITIONAL_TAG).to(self.device)
        g = rng.normal_from_odd(
            rng.odd_integers(g_words)[:, : self.units * features + (self.units * features) % 2],
            self.sigma,
        )[:, : self.units * features]
        g = g.reshape(k, self.units, features).to(torch.float64)
        x = self.x64.to(self.device)
        pinv = self.pinv.to(self.device)
        z = z1.to(torch.float64)
        w1 = z @ pinv.T + g - (g @ x.T) @ pinv.T  # [k, units, F]
        params[self.names[0]] = w1.to(torch.float32).reshape(k, *self.first_entry.shape)
        if out_name is not None:
            odd = (candidates % 2 == 1).to(self.device)
            if bool(odd.any()):
                weight = params[out_name]
                weight[odd] = weight[odd].flip(1)
        return params
