# Aggregate the runs of the current config into tidy tables (see batchlab.tables).
from batchlab import tables
from batchlab.logs import setup_logging
import logging

setup_logging(snakemake.log[0])
tables.write(
    snakemake.input.summaries,
    snakemake.output.history,
    snakemake.output.runs,
    targets=snakemake.params.targets,
)
logging.getLogger("batchlab.tables").info("aggregated %d runs", len(snakemake.input.summaries))
