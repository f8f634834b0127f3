# Write paper/numbers.tex from the tables (see batchlab.numbers).
import pandas as pd

from batchlab import numbers

numbers.write(
    pd.read_parquet(snakemake.input.runs),
    pd.read_parquet(snakemake.input.history),
    snakemake.output[0],
    study=snakemake.params.study,
)
