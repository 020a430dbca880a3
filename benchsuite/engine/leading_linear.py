"""CPU Guess & Check for networks that start with a Linear layer: generation fused with that layer.

Why: the leading layer holds most of a draw's numbers (71% of the paper MLP's), and on CPU the
sampler runs a few percent above the cost of its random words (docs/performance.md). So a few
draws at a time (a piece that fits in L2) are generated, converted and pushed through the leading
layer on all N points while they are in cache; its weights only ever live in a piece-sized scratch
(a chunk-sized array of them would be written to memory and never read again), its product goes
straight to its place, and only the later layers' weights are kept for the chunk's decision.

The numbers are random.py's, bit for bit. Where engine/native.py's compiled kernel is built, it
writes them, finished, straight into the scratch and the later layers' arrays; otherwise uniform
weights are converted here in one numpy call per parameter (`uniform_from_odd`), others by
draws.convert_cpu. Where the leading layer's prior is
U[-s, s] with s a power of two, the layer multiplies the exact odd integers t instead of the
weights t * s * 2**-24 and scales its output once (`folding_factor`): one cast instead of a cast
and a multiply per weight, the same bits (why: folding_factor).
"""

from __future__ import annotations

import math
import threading

import numpy as np
import torch

from benchsuite.engine import random as rng
from benchsuite.engine.draws import CPU_PIECE_BYTES, NativeDraws, convert_cpu, empty_parameters
from benchsuite.engine.layout import Entry, Layout
from benchsuite.engine.sequential import SequentialPlan

SMALLEST_FEATURE = 2.0**-60  # folding_factor's bounds on the shared features
LARGEST_FEATURE = 2.0**60
SCALE_RANGE = (2.0**-10, 2.0**10)  # ... and on a folded prior's scale


def folding_factor(entry: Entry, features: torch.Tensor) -> float | None:
    """c = s * 2**-24 when the leading layer may run on the odd integers t and be scaled by c
    afterwards, else None.

    Scaling one operand of float32 products and sums by a power of two 2**k scales every product,
    every rounded partial sum and every fused multiply-add by exactly 2**k, whatever order the
    BLAS kernel sums in, unless an intermediate overflows or leaves the normal range. With s in
    SCALE_RANGE and every non-zero |feature| in [2**-60, 2**60]: the weights are multiples of
    c >= 2**-34 and the features multiples of 2**-83, so every product and every rounded sum is a
    multiple of 2**-117 (rounding a multiple of a grid step to a coarser ulp stays on the grid):
    non-zero intermediates are >= 2**-117, normal; |t * feature| < 2**84 cannot overflow for any
    realistic width. Signs of zeros agree too (sign(t) = sign(weight)).
    """
    if entry.kind != "uniform" or entry.center != 0.0:
        return None
    mantissa, _ = math.frexp(entry.scale)
    if mantissa != 0.5 or not SCALE_RANGE[0] <= entry.scale <= SCALE_RANGE[1]:
        return None
    magnitude = features.abs()
    nonzero = magnitude[magnitude != 0]
    if not bool(torch.isfinite(features).all()):
        return None
    if nonzero.numel() and not (
        float(nonzero.min()) >= SMALLEST_FEATURE and float(nonzero.max()) <= LARGEST_FEATURE
    ):
        return None
    return entry.scale * 2.0**-24


class LeadingLinear:
    """Decides ranges of draws of a module whose first weight layer is a Linear (CPU only)."""

    def __init__(self, layout: Layout, plan: SequentialPlan, features: torch.Tensor, names):
        self.layout, self.plan, self.features = layout, plan, features
        self.first = layout.entry(names[0])
        self.later = [layout.entry(name) for name in names[1:]]
        self.direct = all(
            e.kind == "uniform" and e.center == 0.0 for e in [self.first, *self.later]
        )
        self.fold = folding_factor(self.first, features) if self.direct else None
        self.piece = max(1, CPU_PIECE_BYTES // (8 * layout.words))
        self.local = threading.local()  # per worker thread: its scratch

    def _scratch(self) -> torch.Tensor:
        scratch = getattr(self.local, "scratch", None)
        if scratch is None:
            scratch = self.local.scratch = torch.empty((self.piece, *self.first.shape))
        return scratch

    def generate(self, seed: int, first_draw: int, count: int):
        """(later layers' parameters [count, ...] by name, leading layer's output [count, out, N])
        of draws first_draw .. first_draw + count - 1."""
        later = {e.name for e in self.later}
        params = empty_parameters(self.layout, count, "cpu", later)
        out_units, points = self.first.shape[0], self.features.shape[0]
        first = torch.empty((count, out_units, points), dtype=torch.float32)
        scratch = self._scratch()
        if not self._generate_native(seed, first_draw, count, params, scratch, first):
            self._generate_numpy(seed, first_draw, count, params, scratch, first)
        if self.fold is not None:
            first.mul_(self.fold)  # exact: a power of two, back to the weights' products
        return params, first

    def _generate_numpy(self, seed, first_draw, count, params, scratch, first) -> None:
        """`generate` from numpy's Philox words, converted here piece by piece."""
        words_per_draw = self.layout.words
        stream = rng.numpy_stream(seed, first_draw, words_per_draw)
        if self.direct:
            rows = {e.name: params[e.name].numpy().reshape(count, -1) for e in self.later}
            factors = {e.name: np.float32(e.scale * 2.0**-24) for e in self.later}
            scratch_rows = scratch.numpy().reshape(self.piece, -1)
            lo, hi = self.first.offset, self.first.offset + self.first.count
        for a in range(0, count, self.piece):
            b = min(count, a + self.piece)
            words = stream.random_raw((b - a) * words_per_draw).reshape(b - a, words_per_draw)
            if self.direct:
                t = rng.odd_integers_in_place(words)
                for e in self.later:
                    rng.uniform_from_odd(
                        t[:, e.offset : e.offset + e.count], factors[e.name], rows[e.name][a:b]
                    )
                if self.fold is not None:
                    np.copyto(scratch_rows[: b - a], t[:, lo:hi], casting="unsafe")  # exact
                else:
                    factor = np.float32(self.first.scale * 2.0**-24)
                    rng.uniform_from_odd(t[:, lo:hi], factor, scratch_rows[: b - a])
            else:
                out = {name: value[a:b] for name, value in params.items()}
                out[self.first.name] = scratch[: b - a]
                convert_cpu(words, self.layout, out, slice(0, b - a))
            self.plan.first_layer(scratch[: b - a], self.features, first[a:b])

    def _generate_native(self, seed, first_draw, count, params, scratch, first) -> bool:
        """`generate` through the compiled kernel (engine/native.py): the later layers' weights of
        the whole range in one call, the leading layer's piece by piece into the scratch; False,
        with nothing written, where there is no kernel."""
        raw = frozenset({self.first.name}) if self.fold is not None else frozenset()
        later = NativeDraws.create(self.layout, seed, set(params))
        lead = NativeDraws.create(self.layout, seed, {self.first.name}, raw)
        if later is None or lead is None or not later(first_draw, params):
            return False
        for a in range(0, count, self.piece):
            b = min(count, a + self.piece)
            if not lead(first_draw + a, {self.first.name: scratch[: b - a]}):
                raise RuntimeError("the compiled kernel refused the leading layer's scratch")
            self.plan.first_layer(scratch[: b - a], self.features, first[a:b])
        return True
