"""Which package code a job runs: the batchlab modules a script (or a notebook) imports, directly or
through other modules, and a digest of their source.

Snakemake's ``code`` trigger sees a rule's own script, not the package it imports. The light rules (tables,
combiners, notebooks, numbers, the paper) therefore take :func:`code_digest` of their script as a param:
an edit of a module they use changes it, and they run again; training takes none, so it never reruns for
an edit of the code. Read from the source with ``ast`` (nothing is imported, so a parse stays fast and
never imports torch). A leaf: standard library only.

A run records the code that trained it (:func:`revision`): a digest of the modules whose code decides its
numbers (:data:`TRAINING_MODULES`; it works from a tarball too) and, in a git clone, the commit and whether
the tree had uncommitted changes. An edit of that code never retrains a finished run silently: the parse
reports runs trained by other code, and retraining stays the user's decision.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import subprocess
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def imports_of(tree: ast.AST) -> set[str]:
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
    return frozenset(imports_of(ast.parse((PACKAGE / f"{name}.py").read_text())))


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
    todo = set().union(*(imports_of(ast.parse(_source(Path(p)))) for p in paths))
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


# The modules whose code decides a run's numbers: the engines, the model and the data they train, the
# schedules and what is measured during training.
TRAINING_MODULES = ("augment", "batch_schedule", "batched", "builders", "data", "metrics", "models", "packs",
                    "schedules", "sequential", "stacked", "stacked_optim", "training")


@functools.lru_cache(maxsize=None)
def training_digest() -> str:
    """The digest of the training code (:data:`TRAINING_MODULES`) of this source tree."""
    return digest_of_modules(list(TRAINING_MODULES))


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):  # no git, or it hangs
        return None
    return out.stdout.strip() if out.returncode == 0 else None


@functools.lru_cache(maxsize=None)
def revision() -> dict:
    """What a run records of the code that trained it: ``code_digest`` (always), ``git_commit`` and
    ``git_dirty`` (uncommitted changes to tracked files) when batchlab runs from a git clone, else None."""
    root = PACKAGE.parents[1]  # the source tree's root, where the Snakefile is
    commit = _git(root, "rev-parse", "HEAD") if (root / "Snakefile").exists() else None
    dirty = None if commit is None else bool(_git(root, "status", "--porcelain", "--untracked-files=no"))
    return {"code_digest": training_digest(), "git_commit": commit, "git_dirty": dirty}


def other_code(digests: dict[str, str | None], current: str) -> str | None:
    """One line on the complete runs (``digests``: run id -> the training-code digest its summary records)
    trained by other code than ``current``, or None when there are none."""
    others: dict[str, int] = {}
    for digest in digests.values():
        if digest != current:
            key = digest or "not recorded"
            others[key] = others.get(key, 0) + 1
    if not others:
        return None
    counts = ", ".join(f"{n} by {d}" for d, n in sorted(others.items(), key=lambda kv: (-kv[1], kv[0])))
    return (f"{sum(others.values())} complete run(s) of this study were trained by other training code than this "
            f"tree's ({current}): {counts}. They are kept (an edit of the code never retrains a finished run); "
            "to train them again, delete their folders under results/runs/, or bump grid.TRAINING_VERSION when "
            "the change alters what a spec means (every run id changes)")
