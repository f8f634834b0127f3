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
