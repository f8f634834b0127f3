# Train the runs of one pack (see batchlab.train.train_pack).
from batchlab.train import setup_logging, train_pack

setup_logging(snakemake.log[0])
train_pack(
    snakemake.params.specs,
    snakemake.input.dataset,
    snakemake.params.runs_root,
    device=snakemake.params.device,
    threads=snakemake.threads,
)
