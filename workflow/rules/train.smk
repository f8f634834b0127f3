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


# Every pack listed has runs to train, so a receipt of one of them is stale: left over from an invocation
# stopped before the tables consumed it, its runs deleted or damaged since. Snakemake would take the pack
# for done; a stale pack waits instead for a job that removes the stale receipts, so Snakemake trains it.
# (The parse only looks: `snakemake -n` changes nothing on disk.) The job's marker is named after the
# receipts and their times, so a marker left by an interrupted invocation never stands for later ones.
STALE_PACKS = {
    pack.name: grid.receipt_path(pack)
    for pack in PACKS
    if Path(grid.receipt_path(pack)).exists()
}
STALE_MARKER = "results/packs/stale-{}.done".format(
    ids.spec_hash({r: os.stat(r).st_mtime_ns for r in STALE_PACKS.values()})[:12]
)


rule forget_stale_receipts:
    output:
        marker=temp(STALE_MARKER),
    log:
        "logs/forget_stale_receipts.log",
    localrule: True
    resources:
        **LIGHT_RESOURCES,
    params:
        receipts=list(STALE_PACKS.values()),
    run:
        forget_receipts(params.receipts, output.marker, log[0])


for pack in PACKS:

    rule:
        name:
            f"train_pack_{pack.name}"
        input:
            **({"stale": STALE_MARKER} if pack.name in STALE_PACKS else {}),
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
            f"pack {pack.name}: {len(pack.members)} run(s) to train into {RUNS_ROOT}/ "
            + f"({pack.steps} steps each, estimated "
            + estimates.duration(
                estimates.pack_seconds(pack.members, TRAINING, BATCHED)
            )
            + "): "
            + ", ".join(spec["run_id"] for spec in pack.members)
        script:
            "../scripts/train_pack.py"
