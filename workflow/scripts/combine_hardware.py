# The study's hardware table from the per dataset x architecture measurements (see batchlab.hardware).
import logging

from batchlab import hardware
from batchlab.logs import setup_logging

setup_logging(snakemake.log[0])
table = hardware.combine(list(snakemake.input))
table.to_parquet(snakemake.output[0], index=False)
logging.getLogger("batchlab.hardware").info(
    "%d batch sizes of %d dataset x architecture pairs", len(table), len(table.groupby(["dataset", "arch"]))
)
