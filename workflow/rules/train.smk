# One job per pack: runs sharing dataset, architecture, batch size and step count that are not yet
# complete. A run already in results/runs/ is never trained again, so an edit of the config trains only
# the runs it adds or changes.
TRAINING = STUDY["training"]

for pack in PACKS:

    rule:
        name:
            f"train_pack_{pack.name}"
        input:
            dataset=f"results/data/{pack.members[0]['dataset']}.npz",
        output:
            summaries=[summary_file(spec) for spec in pack.members],
        log:
            f"logs/train_pack/{pack.name}.log",
        benchmark:
            f"results/benchmarks/train_pack/{pack.name}.tsv"
        # longest packs first, so the last job to finish is a short one
        priority: sum(spec["steps"] for spec in pack.members)
        conda:
            "../../envs/train.yaml"
        threads: TRAINING["threads"]
        resources:
            mem_mb=TRAINING["mem_mb"],
            runtime=grid.runtime_minutes(pack, TRAINING["seconds_per_step"]),
            gpu=TRAINING["gpu"],
        params:
            specs=list(pack.members),
            device=TRAINING["device"],
            eval_batch_size=STUDY["evaluation"]["batch_size"],
        script:
            "../scripts/train_pack.py"
