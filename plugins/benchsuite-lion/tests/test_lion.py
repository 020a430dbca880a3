"""benchsuite's conformance checks on Lion (the same as `benchsuite check-plugin lion`): its
declared settings validate, seeded runs repeat, and its elementwise promise holds (K networks
trained in one stack equal K trained alone)."""

from benchsuite.testing import assert_conforms


def test_lion_conforms():
    assert_conforms("lion", kind="optimizer")
