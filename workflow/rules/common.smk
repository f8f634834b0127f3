# Validate the config, expand the grid of runs and cut the runs still to train into packs.
# The logic lives in the batchlab package (src/batchlab), where the tests reach it.
import os
import sys
from pathlib import Path

SRC = str(Path(workflow.basedir) / "src")
if SRC not in sys.path:
    sys.path.insert(0, SRC)
# jobs (scripts, notebook kernels) import batchlab from this source tree too, installed or not; this
# sets the variable for them rather than requiring it from the user
os.environ.update(
    PYTHONPATH=os.pathsep.join(
        [SRC] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
)

from batchlab import (
    config as study_config,
    estimates,
    fetch,
    gpus,
    grid,
    ids,
    provenance,
    store,
)  # noqa: E402
from snakemake.logging import logger  # noqa: E402
from snakemake.utils import update_config  # noqa: E402

RUNS_ROOT = "results/runs"
CHECKPOINTS = "results/checkpoints"
SCHEMA = Path(workflow.basedir) / "workflow/schemas/config.schema.yaml"

try:
    # `--config` hands the items of a list or mapping over as strings (seeds=[0,1] gives '0' and '1'):
    # the numbers written there are read as numbers
    update_config(
        config,
        study_config.command_line_values(workflow.config_settings.config, SCHEMA),
    )
    STUDY = study_config.validate(config, SCHEMA, warn=logger.warning)
    estimates.check_costs(STUDY["training"], STUDY["architectures"])
    try:
        study_config.check_data_available(STUDY, "results/data")
    except study_config.ConfigError as missing:
        # `snakemake download_data` alone fetches the data this check finds missing; a dry run plans the
        # study without them (it trains nothing), saying so
        if fetch.requests_only_download(sys.argv):
            pass
        elif fetch.is_dry_run(sys.argv):
            logger.warning(f"{missing} (this dry run plans the study without it)")
        else:
            raise
except (study_config.ConfigError, ValueError) as error:
    raise WorkflowError(f"invalid config: {error}") from None

RUNS = grid.expand(STUDY)
# A run folder damaged since it was written (truncated, altered, half-copied) is reported and trained
# again; its job moves the damaged folder to results/corrupt/ first, and the tables never read it.
DAMAGED = store.damaged_runs(RUNS_ROOT, (spec["run_id"] for spec in RUNS))
for run_id, problem in DAMAGED.items():
    logger.warning(
        f"run {run_id} in {RUNS_ROOT}/ is damaged: {problem}; it will be trained "
        "again, and the damaged folder moved to results/corrupt/"
    )
# A complete run that should keep its final weights (an end of the interpolation) but has none is trained
# again to keep them (deterministic: the same numbers).
INCOMPLETE = {
    s["run_id"]
    for s in RUNS
    if s["run_id"] in DAMAGED
    or not store.is_complete(RUNS_ROOT, s["run_id"])
    or store.lacks_weights(RUNS_ROOT, s)
}
# Complete runs trained by other training code than this tree's are reported, and kept: retraining is the
# user's decision (batchlab.provenance).
if workflow.is_main_process:
    OTHER_CODE = provenance.other_code(
        store.code_digests(
            RUNS_ROOT, (s["run_id"] for s in RUNS if s["run_id"] not in INCOMPLETE)
        ),
        provenance.training_digest(),
    )
    if OTHER_CODE:
        logger.warning(OTHER_CODE)
TRAINING = STUDY["training"]
PACKS = grid.packs(RUNS, INCOMPLETE, TRAINING["pack_size"])
# A pack job's output is a receipt, not its runs' files: Snakemake then tracks one file per pack, not one
# per run, which keeps planning a study of 10,000 runs within seconds. Runs live in the run store, which
# batchlab keeps (atomic, never overwritten); a job removes stale receipts (train.smk).
# GPU slots on one machine (batchlab.gpus): Snakemake hands a local job no GPU, so each GPU job takes a free
# slot itself, and a local run with GPUs lets at most GPUs x jobs_per_gpu of them run at once (unless
# `--resources gpu=N` says otherwise). A cluster executor needs --jobs (Snakemake's own test for one).
GPUS = gpus.plan(
    TRAINING,
    local=workflow.resource_settings.nodes is None,
    limit_given="gpu" in workflow.global_resources,
)
if GPUS.limit is not None:
    workflow.register_resource("gpu", GPUS.limit)
# jobs_per_gpu reaches the jobs through the environment, not params, so editing it reruns no job
os.environ[gpus.JOBS_PER_GPU_ENV] = str(TRAINING["jobs_per_gpu"])

# Packs train batched on a GPU: the estimates (runtime requests, each pack's message) count that. The
# study's estimated training time is printed before the plan, with the wall time on the local GPUs.
BATCHED = estimates.batched_on(TRAINING, len(GPUS.devices))
if workflow.is_main_process:
    logger.info(estimates.total(PACKS, TRAINING, BATCHED, max(len(GPUS.devices), 1)))


# A read-only or full results folder fails before the first job, not in the middle of them. Not at parse
# time: the check writes a probe file, and a dry run writes nothing (it plans on a read-only copy too).
onstart:
    try:
        store.check_writable("results")
    except store.StoreError as error:
        raise WorkflowError(str(error)) from None


wildcard_constraints:
    dataset="|".join(STUDY["datasets"]),
    arch="|".join(STUDY["architectures"]),


# Light jobs (data preparation, tables, notebooks, numbers, paper): run where snakemake runs (the login
# node under a cluster executor) unless the config submits them, and never ask for a GPU (nor a GPU type,
# which the SLURM plugin would otherwise pass on as --gpus=<type>:0).
LIGHT_LOCAL = STUDY["cluster"]["local_light_rules"]
LIGHT_RESOURCES = dict(mem_mb=2000, runtime=30, gpu=0, gpu_model="")


# The analysis notebooks (notebooks.smk) and the figures each one draws (paper.smk builds the paper from
# all of them); time_to_target needs the hardware measurements (hardware.smk).
NOTEBOOKS = {
    "learning_rate": ["accuracy_vs_base_lr", "heatmap", "best_lr", "noise_temperature"],
    "batch_size": [
        "learning_curves",
        "generalization_gap",
        "steps_to_target",
        "noise_scale",
        "distance",
        "grad_norms",
        "critical_batch",
    ],
    "interpolation": ["interpolation", "sharpness"],
    "variants": ["batch_schedules", "budgets"],
    "hardware": ["time_to_target"],
}
# Tables a notebook reads beside the history and runs tables; each reaches it as the parameter
# <name>_path (e.g. hardware -> hardware_path).
NOTEBOOK_TABLES = {
    "interpolation": {"interpolation": "results/tables/interpolation.parquet"},
    "hardware": {"hardware": "results/tables/hardware.parquet"},
}
FIGURES = [figure for figures in NOTEBOOKS.values() for figure in figures]


def source(path):
    """A file of the batchlab source tree (the working directory may be elsewhere)."""
    return str(Path(workflow.basedir) / path)


def code_of(*paths):
    """A light rule's param: the digest of the package code its script (and notebook) runs. Snakemake's
    code trigger sees the script alone; with this an edit of a module it uses reruns the rule (training
    takes none: an edit never retrains). Read from the source, without importing it."""
    return provenance.code_digest(*(source(p) for p in paths))


def train_resources(pack):
    """What a pack's job asks the scheduler for: memory and runtime from the pack (grown with each retry);
    GPUs: a slot on a local run with GPUs; under a cluster executor only when the config sets them, so that
    the profile's default (profiles/slurm) applies otherwise.
    """
    resources = dict(
        mem_mb=lambda wildcards, input, attempt: grid.mem_mb(
            pack, input.size_mb, TRAINING["mem_mb"], attempt
        ),
        runtime=lambda wildcards, attempt: estimates.runtime_minutes(
            pack.members, TRAINING, BATCHED, attempt
        ),
    )
    return {**resources, **GPUS.train_request}


def forget_receipts(receipts, marker, log):
    """Remove the stale receipts (train.smk); the job's marker and its log list them."""
    for receipt in receipts:
        Path(receipt).unlink(missing_ok=True)
    removed = "".join(f"removed the stale receipt {receipt}\n" for receipt in receipts)
    Path(marker).write_text(removed)
    Path(log).write_text(removed)
