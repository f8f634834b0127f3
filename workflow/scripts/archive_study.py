# Pack the study into results/archive/<study>.tar.gz: a reader rebuilds its paper from it without training
# (see batchlab.archive; docs/reproducing.md).
import logging

from batchlab import archive, provenance
from batchlab.logs import setup_logging

setup_logging(snakemake.log[0])
done = archive.build(
    snakemake.output[0],
    snakemake.params.study,
    provenance.revision(),
    snakemake.params.runs,
    [*snakemake.input.tables, *snakemake.input.hardware, *snakemake.input.interpolation],
    lock=snakemake.input.lock,
    numbers=snakemake.input.numbers,
)
logging.getLogger("batchlab.archive").info(
    "wrote %s: %d runs, %d files, %d bytes", snakemake.output[0], done["runs"], done["files"], done["bytes"]
)
