"""The package's shape: no import cycle among batchlab's modules (lazy imports inside functions included),
no function over 80 lines, no module over 400 lines except those named with their reason, and the parse
(config, grid, store) never imports torch or matplotlib. docs/architecture.md describes each module."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from batchlab import provenance

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "batchlab"
DOCS = PACKAGE.parents[1] / "docs" / "architecture.md"
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 400
# Modules allowed past MAX_MODULE_LINES, each with its reason.
LONG_MODULES: dict[str, str] = {}


def modules() -> dict[str, ast.Module]:
    return {path.stem: ast.parse(path.read_text(), str(path)) for path in sorted(PACKAGE.glob("*.py"))}


def batchlab_imports(tree: ast.Module) -> set[str]:
    """The batchlab modules a module imports anywhere in its body (a lazy import inside a function counts:
    it hides a cycle rather than removing it). ``TYPE_CHECKING`` imports count too."""
    return provenance.imports_of(tree)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a path that returns to its start, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_a_cycle_and_accepts_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_among_the_modules():
    graph = {name: batchlab_imports(tree) - {name} for name, tree in modules().items()}
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_no_function_is_longer_than_80_lines():
    long = [
        f"{name}.py:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for name, tree in modules().items()
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, "functions over 80 lines: " + ", ".join(long)


def test_no_module_is_longer_than_400_lines_without_a_reason():
    long = [
        f"{path.name} ({n} lines)"
        for path in sorted(PACKAGE.glob("*.py"))
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES and path.stem not in LONG_MODULES
    ]
    assert not long, "modules over 400 lines: " + ", ".join(long)


def test_every_module_is_described_in_the_architecture_map():
    text = DOCS.read_text()
    missing = [name for name in modules() if name != "__init__" and f"`{name}`" not in text]
    assert not missing, f"docs/architecture.md does not describe: {', '.join(missing)}"


@pytest.mark.parametrize("module", ["batchlab.config", "batchlab.grid", "batchlab.store", "batchlab.numbers",
                                    "batchlab.gpus", "batchlab.fetch", "batchlab.estimates",
                                    "batchlab.provenance", "batchlab.reproducing"])
def test_the_parse_and_the_numbers_import_neither_torch_nor_matplotlib(module):
    code = f"import sys, {module}; print(sorted(m for m in ('torch', 'matplotlib') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(PACKAGE.parent)}).stdout
    assert out.strip() == "[]"
