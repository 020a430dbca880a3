"""Counter-based random numbers for Guess & Check: weights as a pure function of (seed, draw).

Why counter-based: G&C rejects almost every candidate, so it must never store them, yet every
accepted network must be reproducible and results must not depend on chunk size, device or how
much of the stream an early-rejection stage consumed. Philox is a keyed bijection of a counter
(Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011): block b of draw d is
``philox4x64_10(counter=(d * B + b, 0, 0, 0), key=(seed, KEY_TAG))`` where B is the number of
blocks one draw of the module needs, so any block of any draw can be computed directly, in any
order, on any device, and consecutive draws are one contiguous counter range.

The stream of draws d, d+1, ... is identical to numpy's C implementation ``np.random.Philox(key=...,
counter=d * B - 1).random_raw()`` (numpy pre-increments the counter), the CPU path where no C
compiler is found (~1.4-3 ns per 64-bit word per core measured here, one object per chunk);
native.py builds philox.c, which computes the same blocks and writes finished weights, the faster
CPU path. `philox4x64_torch` is a pure-torch implementation of the same function (any device; the
reference for tests and for index lists on CUDA); triton_rng.py is the fused CUDA kernel. Tests
check that all of them agree.

From 64-bit words to weights (the precise resolution, see docs/performance.md): each word gives two
numbers, its low 32 bits first, then its high 32 bits. A 32-bit half h, read as a signed int32 s,
becomes the odd integer ``t = (s >> 7) | 1 = 2 * (s >> 8) + 1`` in (-2**24, 2**24), i.e. its top 24
bits. t is uniform over the 2**24 odd integers of that range, so ``t * 2**-24`` is uniform over the
midpoints of the 2**24 equal cells of (-1, 1): exactly symmetric about 0 (needed by nothing in the
output-swap proof, but it makes every uniform prior symmetric at the bit level too) and never 0 or
+-1. A uniform prior U[-a, a] is ``fl(t * (a * 2**-24))``: one float32 rounding of the exact product
(t is exact in float32, |t| < 2**24). This is torch.uniform_'s resolution (24 random bits).
Normal priors use Box-Muller on consecutive pairs (u1, u2) = ((t + 2**24) / 2**25) in (0, 1), both
the cosine and the sine branch, in float64, rounded once to float32; |z| <= sqrt(50 ln 2) = 5.89.
"""

from __future__ import annotations

import math

import numpy as np
import torch

KEY_TAG = 0x47756573735F4E43  # "Guess_NC": second key word, separates this stream from others
FUNCTION_SPACE_TAG = 0x46756E635F537063  # "Func_Spc": function-space draws (function_space.py)
CONDITIONAL_TAG = 0x436F6E645F576774  # "Cond_Wgt": weights conditioned on pre-activations
MASK32 = 0xFFFFFFFF
MASK64 = (1 << 64) - 1
PHILOX_M0 = 0xD2E7470EE14C6C93
PHILOX_M1 = 0xCA5A826395121157
PHILOX_W0 = 0x9E3779B97F4A7C15
PHILOX_W1 = 0xBB67AE8584CAA73B
NUMBERS_PER_BLOCK = 8  # 4 words x 2 halves


def words_per_draw(count: int) -> int:
    """64-bit words a draw of `count` numbers consumes (whole Philox blocks)."""
    return -(-count // NUMBERS_PER_BLOCK) * 4


def seed_key(seed: int, tag: int = KEY_TAG) -> tuple[int, int]:
    return int(seed) & MASK64, tag


def _signed64(value: int) -> int:
    value &= MASK64
    return value - (1 << 64) if value >> 63 else value


# ---------------------------------------------------------------------------------------------
# CPU: numpy's Philox4x64-10 in C


def numpy_stream(seed: int, first_draw: int, words: int, tag: int = KEY_TAG) -> np.random.Philox:
    """numpy's C Philox positioned at the start of draw `first_draw`; `random_raw(k * words)`
    then returns the next k draws' words. `words` (a multiple of 4) is what one draw consumes, so
    draw d starts at block d * words / 4."""
    assert words % 4 == 0
    start = int(first_draw) * (words // 4)
    return np.random.Philox(
        key=seed_key(seed)[0] | (tag << 64), counter=(start - 1) & ((1 << 256) - 1)
    )


def numpy_words(
    seed: int, first_draw: int, draws: int, words: int, tag: int = KEY_TAG
) -> np.ndarray:
    """[draws, words] uint64: the streams of draws first_draw .. first_draw + draws - 1."""
    stream = numpy_stream(seed, first_draw, words, tag)
    return stream.random_raw(int(draws) * words).reshape(int(draws), words)


# ---------------------------------------------------------------------------------------------
# Any device: the same function in torch integer ops (int64 holding uint64 bit patterns; torch's
# int64 arithmetic wraps modulo 2**64 on every backend it ships).


def _lsr(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 bit patterns."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def _mulhilo(a: torch.Tensor, multiplier: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(high, low) 64-bit words of the 128-bit product a * multiplier, unsigned."""
    b_lo, b_hi = multiplier & MASK32, multiplier >> 32
    a_lo, a_hi = a & MASK32, _lsr(a, 32)
    ll = a_lo * b_lo
    lh = a_lo * b_hi
    hl = a_hi * b_lo
    hh = a_hi * b_hi
    mid = _lsr(ll, 32) + (lh & MASK32) + (hl & MASK32)
    high = hh + _lsr(lh, 32) + _lsr(hl, 32) + _lsr(mid, 32)
    low = a * _signed64(multiplier)
    return high, low


def philox4x64_torch(
    c0: torch.Tensor, c1: torch.Tensor, seed: int, c2: int = 0, c3: int = 0, tag: int = KEY_TAG
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Philox4x64-10 of counters (c0, c1, c2, c3) under key (seed, tag): four int64 words."""
    k0, k1 = seed_key(seed, tag)
    x0, x1 = c0.to(torch.int64), c1.to(torch.int64)
    x2 = torch.full_like(x0, _signed64(c2))
    x3 = torch.full_like(x0, _signed64(c3))
    for _ in range(10):
        hi0, lo0 = _mulhilo(x0, PHILOX_M0)
        hi1, lo1 = _mulhilo(x2, PHILOX_M1)
        x0, x1, x2, x3 = hi1 ^ x1 ^ _signed64(k0), lo1, hi0 ^ x3 ^ _signed64(k1), lo0
        k0, k1 = (k0 + PHILOX_W0) & MASK64, (k1 + PHILOX_W1) & MASK64
    return x0, x1, x2, x3


def torch_words(seed: int, draws: torch.Tensor, words: int, tag: int = KEY_TAG) -> torch.Tensor:
    """[len(draws), words] int64: the streams of the given draw indices (same as numpy_words)."""
    assert words % 4 == 0
    blocks = words // 4
    block = torch.arange(blocks, device=draws.device, dtype=torch.int64).view(1, -1)
    counter = draws.to(torch.int64).view(-1, 1) * blocks + block
    out = torch.stack(philox4x64_torch(counter, torch.zeros_like(counter), seed, tag=tag), dim=-1)
    return out.reshape(draws.numel(), words)


# ---------------------------------------------------------------------------------------------
# Words -> numbers


def odd_integers(words: torch.Tensor) -> torch.Tensor:
    """int64 words [..., W] -> odd integers t in (-2**24, 2**24), int32 [..., 2W] (module doc)."""
    low = ((words << 32) >> 39) | 1
    high = (words >> 39) | 1
    return torch.stack((low, high), dim=-1).flatten(-2).to(torch.int32)


def symmetric_uniform_from_words(words: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """float32 U(-scale, scale) at 24-bit resolution, two per word (low half first)."""
    t = odd_integers(words)
    return t.to(torch.float32) * torch.tensor(scale * 2.0**-24, dtype=torch.float32)


def odd_integers_in_place(words: np.ndarray) -> np.ndarray:
    """uint64 words [..., W] (numpy, overwritten) -> their int32 view [..., 2W] holding the odd
    integers t of `odd_integers`: two in-place passes, no copy (the CPU path)."""
    t = words.view(np.int32)  # little-endian: low half first
    np.right_shift(t, 7, out=t)
    np.bitwise_or(t, 1, out=t)
    return t


def uniform_from_odd(t: np.ndarray, factor: np.float32, out: np.ndarray) -> None:
    """out = fl(t * factor) in float32 (factor = scale * 2**-24: U(-scale, scale)), one pass:
    the int32 -> float32 cast is exact, the product is rounded once."""
    np.multiply(t, factor, out=out, dtype=np.float32, casting="unsafe")


def normal_from_odd(t: torch.Tensor, std: float) -> torch.Tensor:
    """Box-Muller on consecutive pairs of odd integers [..., 2m] -> float32 N(0, std^2) [..., 2m].

    Pair (t0, t1): u = (t + 2**24) / 2**25 in (0, 1); z0 = r cos(2 pi u1), z1 = r sin(2 pi u1),
    r = std * sqrt(-2 ln u0); float64 arithmetic, one rounding to float32 (so CPU and CUDA agree
    except when a float64 result lies within ~1e-16 relative of a float32 rounding boundary).
    """
    # contiguous halves: strided float64 transcendentals are not vectorized (10x slower on CPU)
    u0 = t[..., 0::2].to(torch.float64).contiguous().add_(2.0**24).mul_(2.0**-25)
    u1 = t[..., 1::2].to(torch.float64).contiguous().add_(2.0**24).mul_(2.0**-25)
    radius = u0.log_().mul_(-2.0).sqrt_().mul_(std)
    angle = u1.mul_(2.0 * math.pi)
    return (
        torch.stack((radius * angle.cos(), radius.mul_(angle.sin_())), dim=-1)
        .flatten(-2)
        .to(torch.float32)
    )
