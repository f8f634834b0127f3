"""Which package code a job runs: the batchlab modules a script (or a notebook) imports, directly or
through other modules, and a digest of their source.

Snakemake's ``code`` trigger sees a rule's own script, not the package it imports. The light rules (tables,
combiners, notebooks, numbers, the paper) therefore take :func:`code_digest` of their script as a param:
an edit of a module they use changes it, and they run again; training takes none, so it never reruns for
an edit of the code. Read from the source with ``ast`` (nothing is imported, so a parse stays fast and
never imports torch). A leaf: standard library only.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def _imports(tree: ast.AST) -> set[str]:
    """The batchlab modules an import anywhere in ``tree`` names (lazy imports inside functions too)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "batchlab":
            if node.module == "batchlab":
                found.update(alias.name for alias in node.names)
            else:
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("batchlab."))
    return {name for name in found if (PACKAGE / f"{name}.py").exists()}


@functools.lru_cache(maxsize=None)
def _module_imports(name: str) -> frozenset[str]:
    return frozenset(_imports(ast.parse((PACKAGE / f"{name}.py").read_text())))


def _source(path: Path) -> str:
    """A script's source, or a notebook's code cells (a ``.ipynb`` file)."""
    text = path.read_text()
    if path.suffix != ".ipynb":
        return text
    cells = json.loads(text)["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code" and
                     not "".join(c["source"]).lstrip().startswith(("%", "!")))


def modules_used(*paths: str | Path) -> list[str]:
    """The batchlab modules the scripts or notebooks ``paths`` use: those they import, and those these
    import in turn, sorted; ``__init__`` always (it holds the version)."""
    todo = set().union(*(_imports(ast.parse(_source(Path(p)))) for p in paths))
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo |= _module_imports(name) - seen
    return sorted(seen | {"__init__"})


def digest_of_modules(names: list[str]) -> str:
    """SHA-256 (16 hex digits) of the named modules' source, each with its name."""
    digest = hashlib.sha256()
    for name in sorted(names):
        digest.update(name.encode() + b"\0" + (PACKAGE / f"{name}.py").read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def code_digest(*paths: str | Path) -> str:
    """The digest of the package code the scripts or notebooks ``paths`` run (see :func:`modules_used`)."""
    return digest_of_modules(modules_used(*paths))
