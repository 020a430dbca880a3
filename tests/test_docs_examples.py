"""The plugins docs/writing-plugins.md shows are real: each Python block that defines a plugin
runs as a plugin module and passes the conformance checks, as a newcomer copying it would see."""

from __future__ import annotations

import re
import types
from pathlib import Path

import pytest

from benchsuite.plugins import load_registry
from benchsuite.testing import assert_conforms

DOC = Path(__file__).resolve().parents[1] / "docs" / "writing-plugins.md"
PRELUDE = "import torch\nfrom benchsuite import hookimpl\nfrom benchsuite.records import Hyperparameter, OptimizerSpec, Search\n"


def plugin_blocks() -> dict[str, str]:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    found = {}
    for block in blocks:
        if "def benchsuite_optimizers" in block:
            (name,) = re.findall(r'name="([^"]+)"', block)
            found[name] = block
    return found


def test_the_guide_shows_a_plain_and_a_step_owning_optimizer():
    assert set(plugin_blocks()) == {"signum", "my-sam"}


@pytest.mark.parametrize("name", sorted(plugin_blocks()))
def test_each_documented_optimizer_conforms(name):
    module = types.ModuleType(f"doc_{name.replace('-', '_')}")
    exec(compile(PRELUDE + plugin_blocks()[name], str(DOC), "exec"), module.__dict__)  # noqa: S102 - our own docs
    registry = load_registry(include_entry_points=False, extra=[(module.__name__, module)])
    assert_conforms(name, kind="optimizer", registry=registry)
