"""Every hook is documented, reaches the reference in docs/writing-plugins.md, and is exercised
by a test through a real plugin (as datasette keeps its hooks honest)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from benchsuite import hookspecs
from benchsuite.plugins import HOOKS, hook_reference

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "writing-plugins.md"
BEGIN, END = "<!-- hook reference: begin -->", "<!-- hook reference: end -->"


def hookspec_names() -> list[str]:
    return [name for name, value in vars(hookspecs).items() if name.startswith("benchsuite_") and callable(value)]


def test_every_hookspec_is_registered_with_its_record_type():
    assert sorted(hookspec_names()) == sorted(HOOKS)


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_every_hook_has_a_docstring(hook):
    assert len(inspect.cleandoc(getattr(hookspecs, hook).__doc__ or "")) > 40


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_every_hook_is_implemented_by_a_plugin_in_a_test(hook):
    """A test module that defines a plugin implementing the hook (module attribute or function)."""
    pattern = re.compile(rf"(\b{hook}\s*=\s*hookimpl\(|@hookimpl[^\n]*\n\s*def {hook}\()")
    users = [p.name for p in (ROOT / "tests").glob("test_*.py") if p.name != Path(__file__).name and pattern.search(p.read_text())]
    assert users, f"no test implements {hook} through a plugin"


def test_the_documented_hook_reference_is_generated_from_the_hookspecs():
    text = DOC.read_text()
    assert BEGIN in text and END in text, f"{DOC.name} lacks the {BEGIN} ... {END} block"
    documented = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert documented == hook_reference().strip(), (
        "docs/writing-plugins.md's hook reference is out of date; regenerate it with\n"
        "python -c 'from benchsuite.plugins import hook_reference; print(hook_reference())'"
    )
