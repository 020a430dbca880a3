"""Fixtures shared by the test modules."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for a module of small kernels (opt in with
    `pytestmark = pytest.mark.usefixtures("one_torch_thread")`). Their OpenMP barriers cost more
    than the work, and on a shared machine the waiting threads spin: twice the CPU for the same
    results. Results do not depend on the thread count (test_training.py and test_gnc.py check
    that), and the CLI tests keep the process's count, as a real `benchsuite` would."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
