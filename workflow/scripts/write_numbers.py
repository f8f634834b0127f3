# Write paper/numbers.tex from the tables (see batchlab.numbers; the claims' rules in batchlab.claims).
import logging

import pandas as pd

from batchlab import claims, numbers
from batchlab.logs import setup_logging

setup_logging(snakemake.log[0])
values = numbers.write(
    pd.read_parquet(snakemake.input.runs),
    pd.read_parquet(snakemake.input.history),
    snakemake.output[0],
    study=snakemake.params.study,
    hardware=pd.read_parquet(snakemake.input.hardware) if "hardware" in snakemake.input.keys() else None,
    interpolation=pd.read_parquet(snakemake.input.interpolation),
    settings=dict(snakemake.params.analysis),
    datasets=list(snakemake.params.datasets),
)
log = logging.getLogger("batchlab.numbers")
log.info("wrote %d macros to %s", len(values), snakemake.output[0])
for claim in claims.CLAIMS.values():  # the verdicts in the log, so a reader sees what the study could not test
    log.info("%s: %s%s", claim.stem, values[claim.stem], values[f"{claim.stem}Untested"])
