"""Which package code a job runs (batchlab.provenance): the modules a script or notebook uses, read from the
source, and a digest that changes with any of them and with nothing else."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from batchlab import provenance

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "workflow" / "scripts"


def test_a_script_uses_the_modules_it_imports_and_theirs():
    used = provenance.modules_used(SCRIPTS / "aggregate_runs.py")
    assert {"tables", "store", "ids", "__init__"} <= set(used)  # tables imports store, store imports ids
    assert not {"training", "sequential", "batched", "plots"} & set(used)


def test_a_notebooks_code_cells_count_and_its_magics_do_not(tmp_path):
    notebook = tmp_path / "n.ipynb"
    cells = [{"cell_type": "code", "source": ["%matplotlib inline"]},
             {"cell_type": "markdown", "source": ["from batchlab import training"]},
             {"cell_type": "code", "source": ["from batchlab import plots_hardware\n", "x = 1"]}]
    notebook.write_text(json.dumps({"cells": cells}))
    used = provenance.modules_used(notebook)
    assert "plots_hardware" in used and "panels" in used and "training" not in used


def test_the_training_job_uses_the_training_code_and_the_figures_do_not():
    train = set(provenance.modules_used(SCRIPTS / "train_pack.py"))
    figures = set(provenance.modules_used(SCRIPTS / "run_notebook.py", ROOT / "workflow/notebooks/batch_size.ipynb"))
    assert {"packs", "sequential", "batched", "training"} <= train
    assert {"plots", "plots_batch_size", "notebooks"} <= figures and not {"training", "packs"} & figures


@pytest.fixture
def package_copy(tmp_path, monkeypatch) -> Path:
    copy = tmp_path / "batchlab"
    shutil.copytree(provenance.PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(provenance, "PACKAGE", copy)
    provenance._module_imports.cache_clear()
    yield copy
    provenance._module_imports.cache_clear()


def test_the_digest_changes_with_a_module_used_and_with_nothing_else(package_copy):
    script = SCRIPTS / "aggregate_runs.py"
    before = provenance.code_digest(script)
    assert before == provenance.code_digest(script) and len(before) == 16
    with open(package_copy / "plots.py", "a") as f:  # not used by the tables
        f.write("\n# an edit\n")
    assert provenance.code_digest(script) == before
    with open(package_copy / "ids.py", "a") as f:  # used through store
        f.write("\n# an edit\n")
    assert provenance.code_digest(script) != before


def test_a_run_records_the_training_code_and_the_git_commit_of_a_clone():
    revision = provenance.revision()
    assert revision["code_digest"] == provenance.training_digest() == provenance.digest_of_modules(
        list(provenance.TRAINING_MODULES))
    if (ROOT / ".git").exists():
        assert len(revision["git_commit"]) == 40 and isinstance(revision["git_dirty"], bool)
    else:  # a tarball: the digest alone
        assert revision["git_commit"] is None and revision["git_dirty"] is None
    used = set(provenance.modules_used(SCRIPTS / "train_pack.py"))
    assert set(provenance.TRAINING_MODULES) <= used  # every module named is one the training job runs


def test_git_outside_a_clone_records_nothing(tmp_path):
    assert provenance._git(tmp_path, "rev-parse", "HEAD") is None


def test_runs_trained_by_other_code_are_named_in_one_line():
    assert provenance.other_code({"a": "x1", "b": "x1"}, "x1") is None
    line = provenance.other_code({"a": "x1", "b": "old", "c": "old", "d": None}, "x1")
    assert "\n" not in line
    assert line.startswith("3 complete run(s) of this study were trained by other training code than this tree's (x1): "
                           "2 by old, 1 by not recorded.")
    assert "delete their folders" in line and "TRAINING_VERSION" in line


def test_the_store_reads_the_digest_of_complete_runs_only(tmp_path):
    for run_id, summary in (("a", {"code_digest": "x1"}), ("b", {}), ("c", None)):
        (tmp_path / run_id).mkdir()
        if summary is not None:
            (tmp_path / run_id / "summary.json").write_text(json.dumps(summary))
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "summary.json").write_text("{not json")
    from batchlab import store
    assert store.code_digests(tmp_path, ["a", "b", "c", "d", "missing"]) == {"a": "x1", "b": None, "d": None}
