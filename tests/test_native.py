"""The compiled Philox kernel (engine/native.py, engine/philox.c): the numbers of numpy's Philox and
random.py's mapping bit for bit, whatever the segments; the engine's results unchanged with it on
or off; built once per cache folder even when processes race; and a machine without a compiler
keeps the numpy path."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_leading_linear import paper_mlp
from torch import nn

from benchsuite.builtins.priors import benchsuite_priors
from benchsuite.engine import native
from benchsuite.engine import random as rng
from benchsuite.engine.draws import draw_parameters, generate
from benchsuite.engine.gnc import guess_and_check
from benchsuite.engine.layout import Entry, Layout, build_layout
from benchsuite.records import SamplingRequest

ROOT = Path(__file__).resolve().parents[1]
PRIORS = {p.name: p for p in benchsuite_priors()}
CPU = torch.device("cpu")


@pytest.fixture
def kernel():
    lib = native.library()
    assert lib is not None, "setup.sh installs a C compiler; the kernel must build here"
    return lib


def expected(seed, first_draw, draws, blocks, start, count, factor, tag=rng.KEY_TAG):
    words = rng.numpy_words(seed, first_draw, draws, 4 * blocks, tag)
    t = rng.odd_integers_in_place(words)[:, start : start + count]
    return np.multiply(t, np.float32(factor), dtype=np.float32, casting="unsafe")


# (start, count) lists: heads and tails inside one block, two segments sharing a block, gaps,
# a single number, whole blocks only, up to a draw's last number
SEGMENTS = [
    [(0, 8 * 5)],
    [(3, 1)],
    [(1, 5), (6, 2), (9, 30)],
    [(0, 7), (7, 9), (16, 24)],
    [(13, 2), (22, 11), (36, 4)],
    [(5, 35)],
]
FACTORS = [1.0, 2.0**-24, 0.3 * 2.0**-24, 0.07]


@pytest.mark.parametrize("segments", SEGMENTS)
@pytest.mark.parametrize("first_draw", [0, 3, 2**40 + 11])
def test_the_kernel_gives_numpys_numbers_in_any_segments(kernel, segments, first_draw):
    blocks, draws, seed = 5, 4, 20261202
    spec, dests = [], []
    for i, (start, count) in enumerate(segments):
        factor = FACTORS[i % len(FACTORS)]
        spec.append((start, count, factor))
        dests.append(np.full((draws, count), np.nan, dtype=np.float32))
    native.Filler(kernel, seed, blocks, spec)(first_draw, dests)
    for (start, count, factor), got in zip(spec, dests, strict=True):
        want = expected(seed, first_draw, draws, blocks, start, count, factor)
        assert np.array_equal(got, want), (start, count, factor)


def test_other_tags_and_torch_destinations(kernel):
    dest = torch.empty(3, 16)
    native.fill(kernel, 5, 9, 2, [(0, 16, 1.0, dest)], tag=rng.CONDITIONAL_TAG)
    assert np.array_equal(dest.numpy(), expected(5, 9, 3, 2, 0, 16, 1.0, rng.CONDITIONAL_TAG))


@pytest.mark.parametrize(
    "spec, message",
    [
        ([(4, 8, 1.0), (8, 4, 1.0)], "disjoint"),
        ([(0, 0, 1.0)], "non-empty"),
        ([(30, 20, 1.0)], "within a draw"),
    ],
)
def test_bad_segments_are_refused(kernel, spec, message):
    with pytest.raises(ValueError, match=message):
        native.Filler(kernel, 1, 5, spec)


def test_bad_destinations_are_refused_before_anything_is_written(kernel):
    filler = native.Filler(kernel, 1, 5, [(0, 8, 1.0)])
    for dest in (np.zeros((2, 8), np.float64), np.zeros((2, 16), np.float32)[:, ::2]):
        with pytest.raises(ValueError, match="C-contiguous float32"):
            filler(0, [dest])
    with pytest.raises(ValueError, match="64 bits"):
        filler(2**64 // 5, [np.zeros((2, 8), np.float32)])


def odd_layout() -> Layout:
    """Every kind of entry at awkward offsets: uniform, centred uniform (BatchNorm), zero, and
    normal entries of odd counts (their Box-Muller pair runs one number past the entry)."""
    entries, offset = [], 0
    for name, kind, center, scale, count in [
        ("a", "uniform", 0.0, 1.0, 13),
        ("b", "normal", 0.0, 0.2, 7),
        ("c", "zero", 0.0, 0.0, 0),
        ("d", "uniform", 0.95, 0.05, 21),
        ("e", "uniform", 0.0, 0.125, 40),
        ("f", "normal", 0.0, 1.5, 3),
    ]:
        shape = (max(count, 3),) if kind == "zero" else (count,)
        entries.append(Entry(name, shape, kind, center, scale, offset, count))
        offset += count + count % 2
    return Layout(tuple(entries), offset)


def both_paths(make):
    assert native.library() is not None
    fast = make()
    with native.switched_off():
        assert native.library() is None
        slow = make()
    assert native.library() is not None
    return fast, slow


@pytest.mark.parametrize("first_draw, draws", [(0, 1), (17, 9), (2**33, 3)])
def test_generated_parameters_equal_the_numpy_path(kernel, first_draw, draws):
    layout = odd_layout()
    fast, slow = both_paths(lambda: generate(layout, 77, first_draw, draws, CPU))
    assert set(fast) == set(slow) == {"a", "b", "c", "d", "e", "f"}
    for name in fast:
        assert torch.equal(fast[name], slow[name]), name
    picked = both_paths(lambda: draw_parameters(layout, 77, [5, 2, 40], CPU))
    for name in picked[0]:
        assert torch.equal(picked[0][name], picked[1][name]), name


def lenet():
    return nn.Sequential(
        nn.Conv2d(1, 2, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(288, 2)
    )  # fmt: skip


@pytest.mark.parametrize(
    "module, prior",
    [
        (paper_mlp, "uniform"),  # the leading layer folded: raw odd integers, scaled after
        (paper_mlp, "kaiming-uniform"),  # the leading layer's weights scaled in the kernel
        (paper_mlp, "kaiming-normal"),  # Box-Muller from the kernel's pairs
        (lenet, "uniform"),  # no leading Linear: draws.generate_range
    ],
)
def test_guess_and_check_accepts_the_same_networks(kernel, module, prior):
    x = torch.randn(6, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    y = torch.tensor([0, 1, 1, 0, 1, 0])

    def run():
        request = SamplingRequest(
            module=module(), x_train=x, y_train=y, prior=PRIORS[prior], target=4,
            max_candidates=6000, seed=11, device="cpu", options={"cpu_threads": 1},
        )  # fmt: skip
        return guess_and_check(request)

    fast, slow = both_paths(run)
    assert torch.equal(torch.as_tensor(fast.found_at), torch.as_tensor(slow.found_at))
    assert fast.candidates_tried == slow.candidates_tried and fast.size > 0
    for name in fast.parameters:
        assert torch.equal(fast.parameters[name], slow.parameters[name]), name


def test_the_kernel_is_used_where_it_exists(kernel):
    """Not vacuous: with the kernel on, a layout is filled by it (NativeDraws.create is not None);
    switched off, `library()` is None and the engine takes numpy's path."""
    from benchsuite.engine.draws import NativeDraws

    layout = build_layout(paper_mlp(), PRIORS["uniform"])
    assert NativeDraws.create(layout, 1, {"2.weight"}) is not None
    with native.switched_off():
        assert native.library() is None
        assert NativeDraws.create(layout, 1, {"2.weight"}) is None
    assert native.library() is not None


CHILD = """
import json, sys
from benchsuite.engine import native
lib = native.library()
print(json.dumps({"built": lib is not None}))
"""


def child(env: dict, cache: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD], env={**env, "BENCHSUITE_CACHE": str(cache)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip


def base_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in {"BENCHSUITE_NATIVE", "CC"}}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def test_racing_processes_build_one_library(kernel, tmp_path):
    procs = [child(base_env(), tmp_path) for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    assert all(json.loads(o[0].strip().splitlines()[-1])["built"] for o in outs)
    files = sorted(p.name for p in (tmp_path / "native").iterdir())
    assert len(files) == 1 and files[0].startswith("kernels-") and files[0].endswith(".so"), files


def test_no_compiler_means_the_numpy_path(tmp_path):
    env = base_env()
    env["PATH"] = str(tmp_path / "empty")  # no cc, gcc or clang to be found
    env["CC"] = str(tmp_path / "no-such-compiler")
    proc = child(env, tmp_path)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1]) == {"built": False}
    assert not (tmp_path / "native").exists() or not any((tmp_path / "native").iterdir())


def test_a_failing_compiler_means_the_numpy_path(tmp_path):
    if shutil.which("false") is None:
        pytest.skip("no `false` on this system")
    env = base_env()
    env["CC"] = shutil.which("false")
    proc = child(env, tmp_path)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1]) == {"built": False}
    assert not any((tmp_path / "native").iterdir())  # no partial library left behind


def test_a_network_of_one_linear_layer(kernel):
    """The leading layer is the only weight layer: nothing for the later layers' call."""
    module = nn.Sequential(nn.Flatten(), nn.Linear(64, 2, bias=False))
    x = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1] * 4)

    def run():
        request = SamplingRequest(
            module=module, x_train=x, y_train=y, prior=PRIORS["uniform"], target=3,
            max_candidates=20000, seed=2, device="cpu", options={"cpu_threads": 1},
        )  # fmt: skip
        return guess_and_check(request)

    fast, slow = both_paths(run)
    assert fast.size == 3
    assert torch.equal(torch.as_tensor(fast.found_at), torch.as_tensor(slow.found_at))


def test_an_installed_package_carries_every_kernel_source():
    """A wheel (not an editable install) must ship the C files native.py compiles on first use."""
    import fnmatch
    import tomllib

    root = Path(__file__).resolve().parents[1]
    config = tomllib.loads((root / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["benchsuite"]
    package = root / "benchsuite"
    for source in native.SOURCES:
        relative = source.relative_to(package).as_posix()
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), relative
