# Execute one analysis notebook with papermill and render it to HTML (see batchlab.notebooks).
from pathlib import Path

from batchlab.notebooks import execute

execute(
    snakemake.input.notebook,
    snakemake.output.executed,
    snakemake.output.html,
    parameters={
        "runs_path": snakemake.input.runs,
        "history_path": snakemake.input.history,
        "figures_dir": str(Path(snakemake.output.pdfs[0]).parent),
    },
    log_path=snakemake.log[0],
)
