"""Executing analysis notebooks: papermill with parameters, then an HTML copy for the supplement."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


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
