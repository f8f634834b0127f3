# Write paper/numbers.tex from the tables (see batchlab.numbers).
import logging

import pandas as pd

from batchlab import numbers
from batchlab.logs import setup_logging

setup_logging(snakemake.log[0])
values = numbers.write(
    pd.read_parquet(snakemake.input.runs),
    pd.read_parquet(snakemake.input.history),
    snakemake.output[0],
    study=snakemake.params.study,
    hardware=pd.read_parquet(snakemake.input.hardware) if "hardware" in snakemake.input.keys() else None,
    interpolation=pd.read_parquet(snakemake.input.interpolation),
)
logging.getLogger("batchlab.numbers").info("wrote %d macros to %s", len(values), snakemake.output[0])
