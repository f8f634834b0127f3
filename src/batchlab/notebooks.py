"""The analysis notebooks: executing one (papermill with parameters, then an HTML copy for the supplement), and
what every notebook uses inside (:func:`show` a figure while saving it, :func:`overview` of the runs)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure


def execute(notebook: str, executed: str, html: str, parameters: dict, log_path: str | None = None) -> None:
    """Run ``notebook`` with ``parameters`` into ``executed`` and render it to ``html``.

    A cell that raises fails the call with :class:`NotebookError`, naming the cell and the exception; the
    executed copy, with the traceback in it, is kept for reading, and also beside the log (``<log>.ipynb``),
    where it survives the removal of a failed job's outputs."""
    import papermill
    from nbconvert import HTMLExporter

    Path(executed).parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "w") if log_path else None
    try:
        papermill.execute_notebook(
            notebook, executed, parameters=parameters, kernel_name="python3", cwd=os.getcwd(),
            progress_bar=False, log_output=bool(log), stdout_file=log, stderr_file=log,
        )
    except papermill.PapermillExecutionError as error:
        kept = executed
        if log_path:
            kept = str(Path(log_path).with_suffix(".ipynb"))
            shutil.copyfile(executed, kept)
        raise NotebookError(
            f"notebook {notebook} failed in cell {error.exec_count} ({error.ename}: {error.evalue}); "
            f"the executed notebook with the traceback: {executed} (a copy: {kept})"
        ) from None
    finally:
        if log:
            log.close()
    body, _ = HTMLExporter().from_filename(executed)
    Path(html).write_text(body)


class NotebookError(RuntimeError):
    """An analysis notebook raised; the message names the cell, the exception and the executed copy."""


# -- inside a notebook -----------------------------------------------------------------------------------


def show(name: str, fig: Figure, figures_dir: str | Path) -> None:
    """Save ``fig`` as ``<figures_dir>/<name>.pdf`` and ``.png`` (see :func:`batchlab.plots.save`) and show
    the PNG in the notebook, so its HTML copy has the very image the report gets. Returns nothing, so a cell
    that ends with it shows the figure and no list of paths."""
    from IPython.display import Image, display

    from batchlab import plots  # here, not above: executing a notebook needs no matplotlib

    _, png = plots.save(fig, Path(figures_dir) / name)
    display(Image(filename=str(png)))


def overview(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, architecture): how many runs, how many of them diverged, and the best final test
    accuracy of any run; the first thing a notebook shows of the study it draws."""
    return runs.groupby(["dataset", "arch"]).agg(
        runs=("run_id", "size"), diverged=("diverged", "sum"), best_test_acc=("final_test_acc", "max")
    )
