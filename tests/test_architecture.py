"""The layers of docs/architecture.md hold: import-linter's contracts (pyproject.toml) are kept,
every module has a layer, and no import cycle exists anywhere in the package (lazy imports
inside functions included)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp
import tomllib

ROOT = Path(__file__).resolve().parents[1]
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]


def test_the_import_contracts_are_kept():
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True, no_logo=True))"],
        capture_output=True, text=True, cwd=ROOT, timeout=300, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(CONFIG['contracts'])} kept, 0 broken" in result.stdout


def test_every_module_has_a_layer():
    """A new top-level module must be placed in a layer (and so in docs/architecture.md)."""
    (layers,) = [c["layers"] for c in CONFIG["contracts"] if c["type"] == "layers"]
    placed = {name.strip() for layer in layers for name in layer.split("|")}
    package = ROOT / "benchsuite"
    top = {f"benchsuite.{p.stem}" for p in package.glob("*.py") if p.stem != "__init__"}
    top |= {f"benchsuite.{p.name}" for p in package.iterdir() if (p / "__init__.py").exists()}
    top -= {"benchsuite.hookimpl"}
    assert top - placed == set(), "modules without a layer in pyproject.toml [tool.importlinter]"
    assert placed - top == set(), "layers name modules that do not exist"


def test_no_import_cycles():
    graph = grimp.build_graph("benchsuite")
    adjacency = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = 1
        for imported in adjacency[module]:
            if state.get(imported) == 1:
                return [*path, module, imported]
            if imported not in state and (cycle := visit(imported, [*path, module])):
                return cycle
        state[module] = 2
        return None

    for module in sorted(adjacency):
        if module not in state:
            cycle = visit(module, [])
            assert cycle is None, " -> ".join(cycle)
