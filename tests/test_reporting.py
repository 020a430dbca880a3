"""The reporting package: every format one uniform reporter, and the imports kept pointing one way
(no private name imported from another module, no import cycle inside reporting or the store)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from stored_results import make_results

from benchsuite.cli import leaderboard as leaderboard_command
from benchsuite.leaderboard import leaderboard_from_store
from benchsuite.reporting.csv_table import to_csv
from benchsuite.reporting.files import write_leaderboard
from benchsuite.reporting.html_page import to_html
from benchsuite.reporting.json_rows import to_json
from benchsuite.reporting.latex import to_latex
from benchsuite.reporting.markdown import to_markdown
from benchsuite.records import ReporterSpec
from benchsuite.reporting.reporters import REPORTERS
from benchsuite.store import Store

PACKAGE = Path(__file__).resolve().parents[1] / "benchsuite"
ACYCLIC = ("benchsuite.reporting", "benchsuite.store")  # packages whose modules import one way


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    folder = make_results(tmp_path_factory.mktemp("reporting") / "out", pairs=((0, 1),), models=6)
    with Store.open_existing(folder) as store:
        return leaderboard_from_store(store)


def test_each_reporter_renders_what_its_format_function_renders(rows):
    expected = {
        "md": to_markdown(rows, "t"),
        "csv": to_csv(rows),
        "json": to_json(rows),
        "latex": to_latex(rows, "t"),
        "html": to_html(rows, "t"),
    }
    assert list(REPORTERS) == list(expected)
    for name, reporter in REPORTERS.items():
        assert isinstance(reporter, ReporterSpec) and reporter.name == name
        assert reporter.render(rows, title="t", figures=None) == expected[name]


def test_write_leaderboard_names_files_by_suffix_and_refuses_unknown_formats(rows, tmp_path):
    written = write_leaderboard(list(rows), tmp_path, title="t", formats=("latex",))
    assert [p.name for p in written] == ["leaderboard.tex"]
    assert written[0].read_text() == to_latex(rows, "t")
    with pytest.raises(ValueError, match="no leaderboard format 'tex'; valid: md, csv, json, latex, html"):
        write_leaderboard(rows, tmp_path, formats=("tex",))


def test_the_leaderboard_command_offers_every_reporter():
    (option,) = [p for p in leaderboard_command.params if p.name == "formats"]
    assert all(name in option.help for name in ["terminal", *REPORTERS])


def test_every_builtin_reporter_is_registered_through_the_hook():
    from benchsuite.plugins import load_registry

    registry = load_registry(include_entry_points=False)
    assert {name: registry.get("reporter", name) for name in REPORTERS} == REPORTERS


def modules() -> dict[str, ast.Module]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = ast.parse(path.read_text(), str(path))
    return found


def imports(tree: ast.Module, known: set[str]) -> list[tuple[str, str]]:
    """(module, name) for every `from benchsuite... import name` and `import benchsuite...`,
    lazy ones inside functions included; `name` is '' for a plain import."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("benchsuite"):
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.append((submodule, "") if submodule in known else (node.module, alias.name))
        elif isinstance(node, ast.Import):
            found += [(a.name, "") for a in node.names if a.name.startswith("benchsuite")]
    return found


def test_no_module_imports_a_private_name_of_another():
    found = modules()
    private = [
        f"{importer} imports {name} from {module}"
        for importer, tree in found.items()
        for module, name in imports(tree, set(found))
        if name.startswith("_") and not name.endswith("__") and module != importer
    ]
    assert private == []


@pytest.mark.parametrize("package", ACYCLIC)
def test_no_import_cycle_inside(package):
    found = modules()
    inside = {name for name in found if name == package or name.startswith(package + ".")}
    assert len(inside) > 1, f"{package} is not a package of several modules"
    graph = {
        name: {module for module, _ in imports(found[name], set(found)) if module in inside and module != name}
        for name in inside
    }
    visiting, done, cycles = [], set(), []

    def visit(name: str) -> None:
        if name in visiting:
            cycles.append(visiting[visiting.index(name):] + [name])
            return
        if name in done:
            return
        visiting.append(name)
        for target in sorted(graph[name]):
            visit(target)
        visiting.pop()
        done.add(name)

    for name in sorted(inside):
        visit(name)
    assert cycles == []
