"""Executing analysis notebooks: papermill with parameters, then an HTML copy for the supplement."""

from __future__ import annotations

import os
from pathlib import Path


def execute(notebook: str, executed: str, html: str, parameters: dict, log_path: str | None = None) -> None:
    """Run ``notebook`` with ``parameters`` into ``executed`` and render it to ``html``.

    A cell that raises fails the call; the executed copy, with the traceback in it, is kept for reading.
    """
    import papermill
    from nbconvert import HTMLExporter

    Path(executed).parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "w") if log_path else None
    try:
        papermill.execute_notebook(
            notebook, executed, parameters=parameters, kernel_name="python3", cwd=os.getcwd(),
            progress_bar=False, log_output=bool(log), stdout_file=log, stderr_file=log,
        )
    finally:
        if log:
            log.close()
    body, _ = HTMLExporter().from_filename(executed)
    Path(html).write_text(body)
