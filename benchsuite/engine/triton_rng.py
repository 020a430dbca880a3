"""CUDA fast path of the random stream: Philox4x64-10 fused with the words -> float32 mapping.

Why a kernel: in plain torch ops the Philox rounds are ~300 elementwise passes over memory; here
each thread computes its counters' 4 words in registers and writes 8 finished float32 numbers,
so generation costs one write of the parameters. Same function as random.py (tests compare it
with numpy's Philox through Triton's CPU interpreter; the GPU benchmark script re-checks on GPU).
The high half of the 128-bit product is tl.umulhi on uint64 (PTX mul.hi.u64).
"""

from __future__ import annotations

import torch

from benchsuite.engine import random as rng

try:  # optional: only CUDA runs (and the interpreter test) need it
    import triton
    import triton.language as tl
except Exception:  # noqa: BLE001  # pragma: no cover - triton missing or broken
    triton = None


def available(device: torch.device) -> bool:
    return triton is not None and (device.type == "cuda" or _interpreting())


def _interpreting() -> bool:
    import os

    return os.environ.get("TRITON_INTERPRET") == "1"


if triton is not None:

    @triton.jit
    def _odd_to_float(word, scale):
        signed = word.to(tl.int64, bitcast=True)
        low = ((signed << 32) >> 39) | 1
        high = (signed >> 39) | 1
        return low.to(tl.float32) * scale, high.to(tl.float32) * scale

    # no specialisation on integer values (Triton turns an argument equal to 1 into a constant)
    @triton.jit(do_not_specialize=["first_counter", "n_counters", "key0", "key1"])
    def _philox_uniform_kernel(
        out_ptr,
        first_counter,
        n_counters,
        counters_per_row,
        row_stride,
        key0,
        key1,
        scale,
        BLOCK: tl.constexpr,
    ):
        pid = tl.program_id(0)
        idx = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
        valid = idx < n_counters
        x0 = (first_counter + idx).to(tl.uint64)
        zero = tl.zeros([BLOCK], dtype=tl.uint64)
        x1 = zero
        x2 = zero
        x3 = zero
        k0 = zero + key0
        k1 = zero + key1
        m0 = tl.full([BLOCK], 0xD2E7470EE14C6C93, tl.uint64)
        m1 = tl.full([BLOCK], 0xCA5A826395121157, tl.uint64)
        w0 = tl.full([BLOCK], 0x9E3779B97F4A7C15, tl.uint64)
        w1 = tl.full([BLOCK], 0xBB67AE8584CAA73B, tl.uint64)
        for _ in tl.static_range(10):
            hi0 = tl.umulhi(x0, m0)
            lo0 = x0 * m0
            hi1 = tl.umulhi(x2, m1)
            lo1 = x2 * m1
            x0, x1, x2, x3 = hi1 ^ x1 ^ k0, lo1, hi0 ^ x3 ^ k1, lo0
            k0 = k0 + w0
            k1 = k1 + w1
        row = idx // counters_per_row
        col = (idx % counters_per_row) * 8
        base = tl.multiple_of(row * row_stride + col, 8)
        a0, a1 = _odd_to_float(x0, scale)
        a2, a3 = _odd_to_float(x1, scale)
        a4, a5 = _odd_to_float(x2, scale)
        a6, a7 = _odd_to_float(x3, scale)
        # one [BLOCK, 8] tile: each thread writes its 8 numbers contiguously (coalesced, vector
        # stores) instead of 8 strided scalar stores
        j = tl.arange(0, 8)[None, :]
        tile = tl.where(j == 0, a0[:, None], a1[:, None])
        tile = tl.where(j == 2, a2[:, None], tile)
        tile = tl.where(j == 3, a3[:, None], tile)
        tile = tl.where(j == 4, a4[:, None], tile)
        tile = tl.where(j == 5, a5[:, None], tile)
        tile = tl.where(j == 6, a6[:, None], tile)
        tile = tl.where(j == 7, a7[:, None], tile)
        tl.store(out_ptr + base[:, None] + j, tile, mask=valid[:, None])


def odd_rows(seed: int, first_draw: int, draws: int, words: int, device, tag: int = rng.KEY_TAG):
    """int32 [draws, 2 * words]: the odd integers t of random.py (exact: t = v * 2**24)."""
    v = uniform_rows(seed, first_draw, draws, words, device, tag=tag)
    return v.mul_(2.0**24).to(torch.int32)


def uniform_rows(
    seed: int,
    first_draw: int,
    draws: int,
    words: int,
    device,
    out=None,
    block=256,
    tag: int = rng.KEY_TAG,
):
    """float32 [draws, 2 * words]: t * 2**-24 (random.py), the unit-scale symmetric uniforms of
    draws first_draw .. first_draw + draws - 1 (row d holds draw first_draw + d)."""
    counters_per_row = words // 4
    numbers = 2 * words
    if out is None:
        out = torch.empty((draws, numbers), dtype=torch.float32, device=device)
    n = draws * counters_per_row
    key0, key1 = rng.seed_key(seed, tag)
    grid = (triton.cdiv(n, block),)
    _philox_uniform_kernel[grid](
        out,
        int(first_draw) * counters_per_row,
        n,
        counters_per_row,
        out.stride(0),
        key0,
        key1,
        2.0**-24,
        BLOCK=block,
    )
    return out
