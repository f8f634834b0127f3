# Train the runs of one pack (see batchlab.train.train_pack).
from pathlib import Path

from batchlab.logs import setup_logging
from batchlab.train import train_pack

setup_logging(snakemake.log[0])
train_pack(
    snakemake.params.specs,
    snakemake.input.dataset,
    Path(snakemake.output.summaries[0]).parents[1],  # results/runs/<id>/summary.json
    device=snakemake.params.device,
    threads=snakemake.threads,
    eval_batch_size=snakemake.params.eval_batch_size,
    engine=snakemake.params.engine,
)
