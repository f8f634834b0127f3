# Write paper/reproducing.tex, the paper's section on reproducing it (see batchlab.reproducing).
import logging

from batchlab import reproducing
from batchlab.logs import setup_logging

setup_logging(snakemake.log[0])
reproducing.write(
    snakemake.input.runs,
    snakemake.input.lock,
    snakemake.output[0],
    study=snakemake.params.study,
    configfiles=snakemake.params.configfiles,
)
logging.getLogger("batchlab.reproducing").info("wrote %s", snakemake.output[0])
