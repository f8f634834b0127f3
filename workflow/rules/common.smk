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

from batchlab import config as study_config, grid, store  # noqa: E402
from snakemake.logging import logger  # noqa: E402

RUNS_ROOT = "results/runs"
CHECKPOINTS = "results/checkpoints"

try:
    STUDY = study_config.validate(
        config, Path(workflow.basedir) / "workflow/schemas/config.schema.yaml"
    )
    study_config.check_data_available(STUDY, "results/data")
except study_config.ConfigError as error:
    raise WorkflowError(f"invalid config: {error}") from None
try:  # a read-only or full results folder fails here, not in the middle of the jobs
    store.check_writable("results")
except store.StoreError as error:
    raise WorkflowError(str(error)) from None

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
PACKS = grid.packs(RUNS, INCOMPLETE, STUDY["training"]["pack_size"])
# A pack job's output is a receipt, not its runs' files: Snakemake then tracks one file per pack, not one
# per run, which keeps planning a study of 10,000 runs within seconds. Runs live in the run store, which
# batchlab keeps (atomic, never overwritten). A receipt left over for a pack that has runs to train again
# (their folders deleted) is stale: removed, so the pack trains.
for pack in PACKS:
    Path(grid.receipt_path(pack)).unlink(missing_ok=True)


wildcard_constraints:
    dataset="|".join(STUDY["datasets"]),
    arch="|".join(STUDY["architectures"]),


# Light jobs (data preparation, tables, notebooks, numbers, paper): run where snakemake runs (the login
# node under a cluster executor) unless the config submits them, and never ask for a GPU (nor a GPU type,
# which the SLURM plugin would otherwise pass on as --gpus=<type>:0).
LIGHT_LOCAL = STUDY["cluster"]["local_light_rules"]
LIGHT_RESOURCES = dict(mem_mb=2000, runtime=30, gpu=0, gpu_model="")


def source(path):
    """A file of the batchlab source tree (the working directory may be elsewhere)."""
    return str(Path(workflow.basedir) / path)
