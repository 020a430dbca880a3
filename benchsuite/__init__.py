"""benchsuite: do optimizers find interpolating networks that generalize better than random ones?"""

from benchsuite.hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["__version__", "hookimpl"]
