# Prepare a dataset of the user's own into results/data/<name>.npz (see batchlab.data and batchlab.builders).
from batchlab import data
from batchlab.logs import setup_logging
import logging

setup_logging(snakemake.log[0])
shapes = data.prepare(
    snakemake.wildcards.dataset,
    snakemake.params.options,
    snakemake.params.data_dir,
    snakemake.output[0],
    declaration=snakemake.params.declaration,
)
logging.getLogger("batchlab.data").info("prepared %s: %s", snakemake.wildcards.dataset, shapes)
