"""benchsuite: do optimizers find interpolating networks that generalize better than random ones?"""

import os

# MKL's reproducible mode, set before torch first calls MKL (MKL reads it once). Without it MKL
# picks GEMM kernels on some CPUs by batch position and alignment (measured: AMD EPYC, MKL 2024.2
# in torch 2.14), so a network's numbers would depend on the stack it trained in; AUTO keeps this
# CPU's own code path, made deterministic (no speed change measured). A user's setting wins;
# engine/gemm_check.py finds out whether it took effect, environment.json records it.
os.environ.setdefault("MKL_CBWR", "AUTO")

from benchsuite.hookspecs import hookimpl  # noqa: E402

__version__ = "0.1.0"
__all__ = ["__version__", "hookimpl"]
