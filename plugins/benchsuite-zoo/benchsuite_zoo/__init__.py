"""benchsuite-zoo: optimizers of pytorch-optimizer as benchsuite plugins, for the optimizer
leaderboard (docs: this distribution's README).

Written as any outside author would write a plugin: only benchsuite.records, benchsuite.hookimpl
and (in the tests) benchsuite.testing. Each optimizer declares every setting it takes, a search
space for its learning rate, and whether its update is elementwise (then benchsuite stacks many
networks under one instance; the conformance kit verifies the claim).
"""

from __future__ import annotations

from benchsuite import hookimpl
from benchsuite_zoo import coupled, elementwise


def optimizer_specs():
    """Every zoo optimizer, elementwise ones first."""
    return elementwise.specs() + coupled.specs()


@hookimpl
def benchsuite_optimizers():
    return optimizer_specs()
