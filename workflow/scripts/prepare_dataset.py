# Prepare one dataset into results/data/<name>.npz (see batchlab.data).
from batchlab import data
from batchlab.logs import setup_logging
import logging

setup_logging(snakemake.log[0])
shapes = data.prepare(
    snakemake.wildcards.dataset,
    snakemake.params.options,
    snakemake.params.data_dir,
    snakemake.output[0],
    verify=snakemake.params.verify,
)
logging.getLogger("batchlab.data").info("prepared %s: %s", snakemake.wildcards.dataset, shapes)
