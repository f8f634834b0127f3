# Evaluate the weights along the line between one architecture's small- and large-batch solutions (see
# batchlab.interpolation).
import logging

from batchlab import gpus
from batchlab.logs import setup_logging

setup_logging(snakemake.log[0])
# a free GPU slot on a local run with GPUs, before torch starts CUDA (batchlab.gpus)
gpus.take_slot(snakemake.params.device)

import pandas as pd
import torch

from batchlab import data, interpolation, store
from batchlab.training import pick_device, to_tensors

torch.set_num_threads(snakemake.threads)
small_batch, large_batch = snakemake.params.ends
device = pick_device(snakemake.params.device)
table = interpolation.interpolate_solutions(
    pd.read_parquet(snakemake.input.runs),
    snakemake.wildcards.dataset,
    snakemake.wildcards.arch,
    small_batch,
    large_batch,
    interpolation.alphas(snakemake.params.points, snakemake.params.alpha_min, snakemake.params.alpha_max),
    snakemake.params.runs_root,
    to_tensors(data.load(snakemake.input.dataset), device),
    snakemake.params.eval_batch_size,
)
with store.writing(snakemake.output[0], "a table"):
    table.to_parquet(snakemake.output[0], index=False)
logging.getLogger("batchlab.interpolation").info("wrote %d rows to %s", len(table), snakemake.output[0])
