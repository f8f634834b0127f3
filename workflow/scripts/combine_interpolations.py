# The study's interpolation table from its per-dataset-and-architecture parts (see batchlab.interpolation).
import logging

from batchlab import interpolation, store
from batchlab.logs import setup_logging

setup_logging(snakemake.log[0])
table = interpolation.combine(snakemake.params.parts)
with store.writing(snakemake.output[0], "a table"):
    table.to_parquet(snakemake.output[0], index=False)
logging.getLogger("batchlab.interpolation").info("combined %d rows into %s", len(table), snakemake.output[0])
