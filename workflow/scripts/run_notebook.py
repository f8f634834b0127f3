# Execute one analysis notebook with papermill and render it to HTML (see batchlab.notebooks).
from pathlib import Path

from batchlab.notebooks import execute

execute(
    snakemake.input.notebook,
    snakemake.output.executed,
    snakemake.output.html,
    parameters={
        # every table the rule names (runs, history and any other) as <name>_path
        **{f"{name}_path": path for name, path in snakemake.input.items() if name != "notebook"},
        "figures_dir": str(Path(snakemake.output.pdfs[0]).parent),
        # the config's analysis section: the spread between seeds the figures draw
        "analysis_settings": dict(snakemake.params.analysis),
    },
    log_path=snakemake.log[0],
)
