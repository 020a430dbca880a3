"""MKL's reproducible mode: set on import, so batched products compute each network by itself.

On the AMD EPYC these tests ran on, MKL without MKL_CBWR gave some items of a stacked product
other bits than the same item in another stack (the stacked training paths' premise; see
engine/gemm_check.py); on an Intel Xeon it never did on one thread, so there these tests pass
either way.
"""

from __future__ import annotations

import os
import subprocess
import sys

import torch

from benchsuite.engine.gemm_check import batched_gemm_is_invariant
from benchsuite.engine.threads import torch_single_threaded
from benchsuite.environment import capture_environment


def _python(code: str, **env: str) -> str:
    environment = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"} | env
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_importing_benchsuite_sets_mkls_reproducible_mode_unless_the_user_chose_one():
    assert _python("import benchsuite, os; print(os.environ['MKL_CBWR'])") == "AUTO"
    chosen = "import benchsuite, os; print(os.environ['MKL_CBWR'])"
    assert _python(chosen, MKL_CBWR="COMPATIBLE") == "COMPATIBLE"


def test_batched_products_compute_each_item_by_itself_in_this_process():
    """The test process imported benchsuite before any product, as the CLI and workers do. The
    products run on one intra-op thread, as every engine kernel on CPU does (engine/threads.py):
    on more, MKL may split one item's reduction across the threads (an Intel Xeon with AVX-512,
    two threads: a [1, 1152] x [1152, 25] product alone got other bits than in a stack of five)."""
    assert batched_gemm_is_invariant()
    generator = torch.Generator().manual_seed(1)
    with torch_single_threaded(torch.device("cpu")):
        for m, k, n in [(1, 1152, 25), (2, 1152, 25), (1, 16, 150), (6, 25, 1152), (2, 784, 85)]:
            a, b = torch.randn(5, m, k, generator=generator), torch.randn(5, k, n, generator=generator)
            whole = torch.bmm(a, b)
            for i in range(5):
                assert torch.equal(torch.bmm(a[i : i + 1].clone(), b[i : i + 1].clone())[0], whole[i])


def test_a_fresh_process_that_imports_benchsuite_first_passes_the_probe():
    code = (
        "import benchsuite, torch\n"
        "from benchsuite.engine.gemm_check import batched_gemm_is_invariant\n"
        "print(batched_gemm_is_invariant())"
    )
    assert _python(code) == "True"


def test_the_environment_records_the_cpu_and_mkls_mode():
    environment = capture_environment(torch.device("cpu"))
    assert environment["mkl_cbwr"] == os.environ["MKL_CBWR"]
    assert environment["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert environment["device_name"]
