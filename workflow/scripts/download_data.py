# Fetch the study's datasets that are read from the user's files (see batchlab.fetch).
import logging
import sys

from batchlab import fetch
from batchlab.logs import setup_logging

setup_logging(snakemake.log[0])
if not snakemake.params.datasets:
    logging.getLogger("batchlab.fetch").info("nothing to download: the study's datasets are generated")
for name in snakemake.params.datasets:
    try:
        fetch.fetch(name, snakemake.params.data_dir, snakemake.params.mirrors[name], verify=snakemake.params.verify)
    except (fetch.FetchError, OSError) as error:  # one line, not a traceback
        logging.getLogger("batchlab.fetch").error("%s", error)
        sys.exit(1)
