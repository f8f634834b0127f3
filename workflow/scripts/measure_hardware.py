# Measure time per training step and peak memory against batch size for one dataset x architecture (see
# batchlab.hardware).
from pathlib import Path

from batchlab import gpus
from batchlab.logs import setup_logging

setup_logging(snakemake.log[0])
# a free GPU slot on a local run with GPUs, before torch starts CUDA (batchlab.gpus)
gpus.take_slot(snakemake.params.device)

from batchlab import hardware

table = hardware.measure(
    snakemake.input.dataset,
    snakemake.wildcards.dataset,
    snakemake.wildcards.arch,
    snakemake.params.settings,
    max_batch_size=snakemake.params.max_batch_size,
    warmup_steps=snakemake.params.warmup_steps,
    repeats=snakemake.params.repeats,
    device=snakemake.params.device,
    threads=snakemake.params.threads,  # as training: the job holds every core only to run alone
)
Path(snakemake.output[0]).parent.mkdir(parents=True, exist_ok=True)
table.to_parquet(snakemake.output[0], index=False)
