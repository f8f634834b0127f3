"""batchlab.notebooks: papermill runs a notebook with its parameters; a notebook that raises fails with the
cell and the exception named, and its executed copy, traceback included, is kept; inside a notebook, show
saves a figure and displays it, overview summarises the runs per panel."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pandas as pd
import pytest

from batchlab import config
from batchlab.notebooks import NotebookError, execute, overview

ROOT = Path(__file__).resolve().parents[1]


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


def test_show_saves_the_figure_as_pdf_and_png_and_displays_it_in_the_notebook(tmp_path):
    notebook = write_notebook(
        tmp_path / "show.ipynb",
        "import matplotlib.pyplot as plt\nfrom batchlab.notebooks import show\n"
        "fig, ax = plt.subplots()\nax.plot([0, 1], [value, value])\nshow('line', fig, figures_dir)",
    )
    executed = tmp_path / "out" / "show.ipynb"
    parameters = {"value": 2, "figures_dir": str(tmp_path / "figures")}
    execute(notebook, str(executed), str(tmp_path / "show.html"), parameters)
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == ["line.pdf", "line.png"]
    (output,) = nbformat.read(executed, as_version=4).cells[-1].outputs  # the image, and no list of paths
    assert output.output_type == "display_data" and "image/png" in output.data


def test_overview_counts_runs_divergences_and_the_best_accuracy_per_panel():
    runs = pd.DataFrame({"dataset": ["d"] * 3, "arch": ["mlp", "mlp", "logreg"], "run_id": ["a", "b", "c"],
                         "diverged": [True, False, False], "final_test_acc": [0.1, 0.8, 0.5]})
    table = overview(runs)
    assert table.loc[("d", "mlp")].tolist() == [2, 1, 0.8] and table.loc[("d", "logreg")].tolist() == [1, 0, 0.5]


@pytest.mark.parametrize("path", sorted((ROOT / "workflow" / "notebooks").glob("*.ipynb")), ids=lambda p: p.stem)
def test_every_notebook_takes_the_analysis_settings_with_the_schemas_defaults(path, tiny_raw):
    nb = nbformat.read(path, as_version=4)
    (parameters,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    values = {}
    exec(parameters.source, values)  # the parameters cell only assigns literals
    assert values["analysis_settings"] == config.validate(tiny_raw)["analysis"]
    assert "analysis_settings)" in "".join(c.source for c in nb.cells if c.cell_type == "code")  # a figure uses them
