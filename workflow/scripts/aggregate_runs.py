# Aggregate the runs of the current config into tidy tables (see batchlab.tables).
from batchlab import store, tables
from batchlab.logs import setup_logging
import logging

setup_logging(snakemake.log[0])
summaries = [store.summary_path(snakemake.params.runs_root, run) for run in snakemake.params.runs]
tables.write(
    summaries,
    snakemake.output.history,
    snakemake.output.runs,
    targets=snakemake.params.targets,
)
logging.getLogger("batchlab.tables").info("aggregated %d runs", len(summaries))
