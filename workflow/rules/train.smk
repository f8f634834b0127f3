# One job per pack: runs sharing dataset, architecture, batch size and step count that are not yet
# complete. A run already in results/runs/ is never trained again, so an edit of the config trains only
# the runs it adds or changes. The job writes its runs to the run store and then its receipt.
# Packs submitted together as one cluster job (profiles/slurm, BATCHLAB_PACKS_PER_JOB): they form the group
# "train", which the profile cuts into components of that many packs. Ungrouped by default, because
# Snakemake reports a failed group without the executor's message (sbatch's error, the SLURM state).
# Read from the environment, which SLURM passes on to the job, so its own parse agrees.
TRAIN_GROUP = (
    "train" if int(os.environ.get("BATCHLAB_PACKS_PER_JOB", "1")) > 1 else None
)


def train_resources(pack):
    """What a pack's job asks the scheduler for: memory and runtime from the pack (grown with each retry);
    GPUs only when the config sets them, so a cluster profile's default (profiles/slurm) applies otherwise.
    """
    resources = dict(
        mem_mb=lambda wildcards, input, attempt: grid.mem_mb(
            pack, input.size_mb, TRAINING["mem_mb"], attempt
        ),
        runtime=lambda wildcards, attempt: grid.runtime_minutes(
            pack, TRAINING["seconds_per_step"], attempt
        ),
    )
    if TRAINING["gpu"] is not None:
        resources["gpu"] = TRAINING["gpu"]
    return resources


for pack in PACKS:

    rule:
        name:
            f"train_pack_{pack.name}"
        input:
            dataset=f"results/data/{pack.members[0]['dataset']}.npz",
        output:
            # consumed by aggregate_runs, then deleted: the runs themselves are in results/runs/
            receipt=temp(grid.receipt_path(pack)),
        log:
            f"logs/train_pack/{pack.name}.log",
        benchmark:
            f"results/benchmarks/train_pack/{pack.name}.tsv"
        # longest packs first, so the last job to finish is a short one
        priority: sum(spec["steps"] for spec in pack.members)
        group:
            TRAIN_GROUP
        conda:
            "../../envs/train.yaml"
        threads: TRAINING["threads"]
        resources:
            **train_resources(pack),
        params:
            specs=list(pack.members),
            runs_root=RUNS_ROOT,
            device=TRAINING["device"],
            engine=TRAINING["engine"],
            eval_batch_size=STUDY["evaluation"]["batch_size"],
            checkpoint=TRAINING["checkpoint"],
            checkpoint_dir=CHECKPOINTS,
        message:
            f"pack {pack.name}: {len(pack.members)} run(s) to train into {RUNS_ROOT}/: "
            + ", ".join(spec["run_id"] for spec in pack.members)
        script:
            "../scripts/train_pack.py"


# A pack with a stale receipt (common.smk) trains as if the receipt were not there, as `--forcerun` would
# have it; not in a job's own snakemake (on a cluster, or a local subprocess), which runs its one job only.
if STALE_PACKS and not (workflow.remote_exec or workflow.subprocess_exec):
    workflow.dag_settings.forcerun = {
        *workflow.dag_settings.forcerun,
        *(f"train_pack_{pack.name}" for pack in STALE_PACKS),
    }
