# Train the runs of one pack (see batchlab.packs.train_pack). Stopped by SIGTERM or SIGINT, the job saves
# its runs' checkpoints and exits with 128 + the signal's number; run again, it resumes from them.
import logging
import sys
import time

from batchlab import phases

# when the job's process started, for the start-up time in the log's last line (batchlab.phases)
JOB_START = time.perf_counter() - phases.seconds_since_process_start()

from batchlab import gpus
from batchlab.logs import setup_logging

setup_logging(snakemake.log[0])
# a free GPU slot on a local run with GPUs, before torch starts CUDA (batchlab.gpus)
gpus.take_slot(snakemake.params.device)

from batchlab.checkpoint import Checkpointer, TrainingInterrupted
from batchlab.store import write_receipt
from batchlab.packs import train_pack

try:
    train_pack(
        snakemake.params.specs,
        snakemake.input.dataset,
        snakemake.params.runs_root,
        device=snakemake.params.device,
        threads=snakemake.threads,
        eval_batch_size=snakemake.params.eval_batch_size,
        engine=snakemake.params.engine,
        checkpoints=Checkpointer.from_config(snakemake.params.checkpoint_dir, snakemake.params.checkpoint),
        job_start=JOB_START,
    )
except TrainingInterrupted as stop:
    logging.getLogger("batchlab.packs").warning(
        "%s; checkpoints are in %s, and the next run of this job resumes from them",
        stop, snakemake.params.checkpoint_dir,
    )
    sys.exit(128 + stop.signum)
write_receipt(snakemake.output.receipt, snakemake.params.specs, snakemake.params.runs_root)
