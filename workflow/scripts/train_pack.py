# Train the runs of one pack (see batchlab.train.train_pack).
from batchlab.logs import setup_logging
from batchlab.store import write_receipt
from batchlab.train import train_pack

setup_logging(snakemake.log[0])
train_pack(
    snakemake.params.specs,
    snakemake.input.dataset,
    snakemake.params.runs_root,
    device=snakemake.params.device,
    threads=snakemake.threads,
    eval_batch_size=snakemake.params.eval_batch_size,
    engine=snakemake.params.engine,
)
write_receipt(snakemake.output.receipt, snakemake.params.specs, snakemake.params.runs_root)
