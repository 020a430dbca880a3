"""Small compiled kernels for the CPU, when they can be built: philox.c (G&C's random weights) and
convnet.c (forward and backward of small convolutional networks, engine/stacked_conv.py).

Why philox.c: on CPU, Guess & Check is bound by its random numbers. numpy's Philox hands out raw
64-bit words, and turning them into float32 weights takes three more numpy passes over memory; the
kernel computes the same Philox blocks and writes each weight, converted and scaled, straight to
its place, in one pass (docs/performance.md measures it against numpy's words alone).

Why convnet.c: a LeNet step at batch size 2 is small enough that torch spends it in memory traffic
and per-op overhead (docs/performance.md).

philox.c's bits are random.py's, always. The library is compiled from the package's own sources
with the system C compiler (no -march, no fast-math, so a cache shared across machines stays
valid), kept under the user's cache folder keyed by the sources, compiler and platform, and
checked against numpy's Philox on load. Where no compiler is found, the build fails or the check
disagrees, or BENCHSUITE_NATIVE=0 is set, `library()` is None: G&C keeps its numpy path (the same
numbers) and convolutional training its torch formulation (other roundings: a run records whether
the kernels were there, `compiled_kernels` in environment.json). The compiler runs once per cache
key, as a plain argument list (no shell).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

SOURCES = tuple(Path(__file__).with_name(name) for name in ("philox.c", "convnet.c"))
FLAGS = ("-O3", "-fPIC", "-shared", "-ffp-contract=off", "-fno-fast-math")
BUILD_SECONDS = 120
_FLOAT32 = torch.float32
MAX_BLOCK = 2**64 - 1  # the kernel's counter is one 64-bit word; numpy's carries beyond it


def cache_folder() -> Path:
    """Where built kernels are kept: $BENCHSUITE_CACHE, else $XDG_CACHE_HOME or ~/.cache."""
    root = os.environ.get("BENCHSUITE_CACHE")
    if root:
        return Path(root) / "native"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "benchsuite" / "native"


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name:
            found = shutil.which(name)
            if found:
                return found
    return None


def _key(compiler: str) -> str:
    digest = hashlib.sha256(b"".join(source.read_bytes() for source in SOURCES))
    digest.update("\0".join([compiler, *FLAGS, sys.platform, platform.machine()]).encode())
    return digest.hexdigest()[:16]


def _build(compiler: str, target: Path, sources=SOURCES) -> None:
    """Compile the sources into `target`, atomically (several worker processes may race here);
    `sources`: another tree's (benchmarks/convnet_speed.py)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(handle)
    try:
        subprocess.run(
            [compiler, *FLAGS, *map(str, sources), "-o", partial, "-lm"],
            check=True, capture_output=True, timeout=BUILD_SECONDS, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)


def _bind(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    lib.bs_philox_version.restype = ctypes.c_int64
    lib.bs_philox_version.argtypes = []
    lib.bs_philox_segments.restype = None
    lib.bs_philox_segments.argtypes = [
        ctypes.c_uint64, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_int64, ctypes.c_int64,
        ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
        ctypes.c_void_p,
    ]  # fmt: skip
    lib.bs_convnet_version.restype = ctypes.c_int64
    lib.bs_convnet_version.argtypes = []
    lib.bs_convnet_gradients.restype = ctypes.c_int64
    lib.bs_convnet_gradients.argtypes = [
        ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
    ]  # fmt: skip
    lib.bs_convnet_margin_norms.restype = ctypes.c_int64
    lib.bs_convnet_margin_norms.argtypes = [
        ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
        ctypes.c_void_p,
    ]  # fmt: skip
    lib.bs_convnet_sgd_steps.restype = ctypes.c_int64
    lib.bs_convnet_sgd_steps.argtypes = [
        ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
    ]  # fmt: skip
    lib.bs_resnet_gradients.restype = ctypes.c_int64
    lib.bs_resnet_gradients.argtypes = [
        ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64,
    ]  # fmt: skip
    lib.bs_resnet_margin_norms.restype = ctypes.c_int64
    lib.bs_resnet_margin_norms.argtypes = lib.bs_convnet_margin_norms.argtypes
    lib.bs_resnet_logits.restype = ctypes.c_int64
    lib.bs_resnet_logits.argtypes = [
        ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
        ctypes.c_void_p, ctypes.c_int64,
    ]  # fmt: skip
    lib.bs_sgd_update.restype = None
    lib.bs_sgd_update.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_float, ctypes.c_int64]
    return lib


def _agrees(lib: ctypes.CDLL) -> bool:
    """The kernel against numpy's Philox and random.py's mapping, on a few odd-shaped draws."""
    from benchsuite.engine import random as rng

    seed, blocks, draws = 987654321, 5, 3
    words = rng.numpy_words(seed, 7, draws, 4 * blocks)
    t = rng.odd_integers_in_place(words.copy())
    factor = np.float32(0.75 * 2.0**-24)
    expected = [t[:, 1:14].astype(np.float32), (t[:, 17:38] * factor).astype(np.float32)]
    got = [np.full((draws, 13), np.nan, np.float32), np.full((draws, 21), np.nan, np.float32)]
    fill(lib, seed, 7, blocks, [(1, 13, 1.0, got[0]), (17, 21, factor, got[1])])
    return all(np.array_equal(a, b) for a, b in zip(expected, got, strict=True))


@functools.cache
def library() -> ctypes.CDLL | None:
    """The loaded kernels, or None where the numpy and torch paths have to do (module doc)."""
    if os.environ.get("BENCHSUITE_NATIVE", "1").strip() in {"0", "off", "false", "no"}:
        return None
    compiler = _compiler()
    if compiler is None:
        return None
    try:
        target = cache_folder() / f"kernels-{_key(compiler)}.so"
        if not target.exists():
            _build(compiler, target)
        lib = _bind(target)
        if lib.bs_philox_version() != 1 or lib.bs_convnet_version() != 4 or not _agrees(lib):
            return None
        return lib
    except (OSError, subprocess.SubprocessError, AttributeError):
        return None


@functools.cache
def sgd_update_agrees() -> bool:
    """Whether the kernel's SGD update, fmaf(grad, -lr, param) per element, is torch's
    `param.add_(grad, alpha=-lr)` here, bit for bit. It is where torch's CPU kernel is a fused
    multiply-add (its AVX2 and AVX-512 builds; `p + a * g` rounds twice and differs in about one
    value in ten); elsewhere the update stays torch's and nothing is fused (stacked_conv.py).
    Checked once per process on lengths with and without a vector tail."""
    lib = library()
    if lib is None:
        return False
    generator = torch.Generator().manual_seed(20261203)
    for n in (1, 7, 8, 13, 31, 64, 1003, 4099):
        param = torch.randn(n, generator=generator, dtype=_FLOAT32)
        grad = torch.randn(n, generator=generator, dtype=_FLOAT32) * 3
        for lr in (0.01, 0.1, 1 / 3, 1.7):
            expected = param.clone().add_(grad, alpha=-lr)
            got = param.clone()
            lib.bs_sgd_update(got.data_ptr(), grad.data_ptr(), -lr, n)
            if not torch.equal(expected, got):
                return False
    return True


@contextlib.contextmanager
def switched_off():
    """The engine without its compiled kernels inside the block (BENCHSUITE_NATIVE=0), as before
    after it: how tests and benchmarks compare the two paths in one process."""
    before = os.environ.get("BENCHSUITE_NATIVE")
    os.environ["BENCHSUITE_NATIVE"] = "0"
    library.cache_clear()
    sgd_update_agrees.cache_clear()
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("BENCHSUITE_NATIVE", None)
        else:
            os.environ["BENCHSUITE_NATIVE"] = before
        library.cache_clear()
        sgd_update_agrees.cache_clear()


class Filler:
    """One kind of call into the kernel, prepared once: the segments (start, count, factor) of
    each draw's numbers; a call names the first draw and a destination per segment. Why a class:
    the engine calls it once per L2-sized piece of a few draws, so the arguments are built once.
    """

    def __init__(self, lib: ctypes.CDLL, seed: int, blocks_per_draw: int, segments,
                 tag: int | None = None):  # fmt: skip
        from benchsuite.engine import random as rng

        self.lib, self.blocks = lib, int(blocks_per_draw)
        self.key = rng.seed_key(seed) if tag is None else rng.seed_key(seed, tag)
        self.start = np.array([s[0] for s in segments], dtype=np.int64)
        self.count = np.array([s[1] for s in segments], dtype=np.int64)
        self.factor = np.array([s[2] for s in segments], dtype=np.float32)
        n = len(segments)
        if np.any(self.count <= 0) or np.any(self.start[1:] < self.start[:-1] + self.count[:-1]):
            raise ValueError("segments must be non-empty, sorted and disjoint")
        if n and (self.start[0] < 0 or self.start[-1] + self.count[-1] > 8 * self.blocks):
            raise ValueError("segments must lie within a draw's numbers")
        self.pointers = (ctypes.c_void_p * max(1, n))()
        self.stride = np.empty(n, dtype=np.int64)

    def __call__(self, first_draw: int, destinations) -> None:
        """Draws first_draw, ... into `destinations` (one per segment, C-contiguous float32 on the
        CPU, [draws, ...] with at least the segment's count per row; numpy or torch). ValueError,
        with nothing written, for a destination the kernel cannot take or a counter past 2**64."""
        draws = len(destinations[0]) if len(destinations) else 0
        if draws == 0:
            return
        first_block = int(first_draw) * self.blocks
        if first_block < 0 or first_block + draws * self.blocks > MAX_BLOCK:
            raise ValueError("Philox counter beyond 64 bits: use the numpy path")
        for i, dest in enumerate(destinations):
            self.pointers[i], self.stride[i] = _pointer(dest, draws, int(self.count[i]))
        self.lib.bs_philox_segments(
            self.key[0], self.key[1], first_block, draws, self.blocks, len(self.count),
            self.start.ctypes.data, self.count.ctypes.data, self.factor.ctypes.data,
            ctypes.addressof(self.pointers), self.stride.ctypes.data,
        )  # fmt: skip


def fill(lib: ctypes.CDLL, seed: int, first_draw: int, blocks_per_draw: int, segments,
         tag: int | None = None) -> None:  # fmt: skip
    """Write draws first_draw, ... into `segments`: (start, count, factor, dest), dest a
    C-contiguous float32 [draws, ...] (numpy or torch): random.py's numbers times factor."""
    filler = Filler(lib, seed, blocks_per_draw, [s[:3] for s in segments], tag)
    filler(first_draw, [s[3] for s in segments])


def _pointer(dest, draws: int, count: int) -> tuple[int, int]:
    """(address, elements per draw) of a C-contiguous float32 destination of `draws` rows that
    hold at least `count` numbers each."""
    if isinstance(dest, np.ndarray):
        ok = dest.dtype == np.float32 and dest.flags.c_contiguous and dest.flags.writeable
        address, size = dest.ctypes.data, dest.size
    else:  # a torch tensor
        ok = dest.dtype == _FLOAT32 and dest.device.type == "cpu" and dest.is_contiguous()
        address, size = dest.data_ptr(), dest.numel()
    if not ok or len(dest) != draws or size // draws < count:
        raise ValueError("destination must be C-contiguous float32 on the CPU with a row per draw")
    return address, size // draws
