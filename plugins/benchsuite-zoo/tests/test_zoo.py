"""benchsuite's conformance checks on the zoo (what `benchsuite check-plugin NAME` runs): declared
settings validate, seeded runs repeat, and training by the host equals the documented plain loop,
which verifies each elementwise claim (a network trained in a stack equals it trained alone).

By default a representative subset runs (one of each kind of wrapper: elementwise, train/eval
averaging, a wrapper of a wrapper, layer-wise norms, parameter groups, a global step-size
estimate, the closure); `BENCHSUITE_ZOO_ALL=1` checks every zoo optimizer (about 20 s).
"""

from __future__ import annotations

import os

import pytest

from benchsuite.testing import assert_conforms

pytest.importorskip("benchsuite_zoo", reason="benchsuite-zoo is not installed (scripts/setup.sh installs it)")
from benchsuite_zoo import optimizer_specs

ALL = [spec.name for spec in optimizer_specs()]
REPRESENTATIVE = ["adabelief", "schedulefree-adamw", "lookahead", "lamb", "muon", "prodigy", "asam"]
CHECKED = ALL if os.environ.get("BENCHSUITE_ZOO_ALL") else REPRESENTATIVE


@pytest.mark.parametrize("name", CHECKED)
def test_zoo_optimizer_conforms(name):
    assert_conforms(name, kind="optimizer")


def test_the_zoo_has_twenty_optimizers_each_with_a_learning_rate_search_space():
    assert len(ALL) >= 20 and len(set(ALL)) == len(ALL)
    for spec in optimizer_specs():
        assert spec.hyperparameters["lr"].search is not None, spec.name
        for name, setting in spec.hyperparameters.items():
            bounded = setting.type in (bool, str) or setting.low is not None
            assert bounded, f"{spec.name}.{name} declares no range"


def test_the_representative_subset_covers_every_kind_of_wrapper():
    specs = {spec.name: spec for spec in optimizer_specs()}
    chosen = [specs[name] for name in REPRESENTATIVE]
    assert any(s.elementwise for s in chosen) and any(not s.elementwise for s in chosen)
    assert any(s.uses_closure for s in chosen)
