"""batchlab.notebooks: papermill runs a notebook with its parameters; a notebook that raises fails with the
cell and the exception named, and its executed copy, traceback included, is kept."""

from __future__ import annotations

import nbformat
import pytest

from batchlab.notebooks import NotebookError, execute


def write_notebook(path, *cells: str):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    parameters = nbformat.v4.new_code_cell("value = 0")
    parameters.metadata["tags"] = ["parameters"]
    nb.cells = [parameters, *(nbformat.v4.new_code_cell(c) for c in cells)]
    nbformat.write(nb, path)
    return str(path)


def test_a_notebook_runs_with_its_parameters_into_html(tmp_path):
    notebook = write_notebook(tmp_path / "ok.ipynb", "print('value is', value * 2)")
    execute(notebook, str(tmp_path / "out" / "ok.ipynb"), str(tmp_path / "ok.html"), {"value": 21},
            log_path=str(tmp_path / "ok.log"))
    executed = nbformat.read(tmp_path / "out" / "ok.ipynb", as_version=4)
    assert "value is 42" in str(executed.cells[-1].outputs)
    assert "value is 42" in (tmp_path / "ok.html").read_text()


def test_a_notebook_that_raises_fails_and_keeps_its_executed_copy(tmp_path):
    notebook = write_notebook(tmp_path / "bad.ipynb", "x = 1", "raise ValueError(f'no figure for value {value}')")
    executed, log = tmp_path / "out" / "bad.ipynb", tmp_path / "logs" / "bad.log"
    log.parent.mkdir()
    with pytest.raises(NotebookError) as info:
        execute(notebook, str(executed), str(tmp_path / "bad.html"), {"value": 3}, log_path=str(log))
    message = str(info.value)
    assert "failed in cell 4 (ValueError: no figure for value 3)" in message  # the injected parameters are cell 2
    assert str(executed) in message and str(log.with_suffix(".ipynb")) in message
    for copy in (executed, log.with_suffix(".ipynb")):
        text = copy.read_text()
        assert "Traceback" in text or "traceback" in text
        assert "no figure for value 3" in text
    assert not (tmp_path / "bad.html").exists()
