# The hardware side of batch size: per dataset and architecture, the time of a training step and its peak
# memory against batch size on the device training uses, up to the largest batch that fits
# (batchlab.hardware). A measurement job runs like a training job (same threads, device and GPU request)
# and reads only the model, optimizer, precision and batch sizes of its runs: editing a learning rate,
# a seed or the budget measures nothing again.
HARDWARE = STUDY["hardware"]
HARDWARE_PAIRS = (
    [(d, a) for d in STUDY["datasets"] for a in STUDY["architectures"]]
    if HARDWARE["enabled"]
    else []
)


# Timings taken while other jobs share the machine's cores zigzag with whatever else runs. On one machine a
# measurement job holds every core Snakemake was given (Snakemake caps a job's threads at --cores), so no
# other job runs beside it; torch still uses training.threads, as a training job does. Under a cluster
# executor each job has its own allocation (docs/configuration.md#the-hardware-side).
HARDWARE_THREADS = (
    workflow.cores if workflow.resource_settings.nodes is None else TRAINING["threads"]
)


# Like a training job's: memory for the interpreter, torch and the dataset, grown with each retry; GPUs as a
# training job's (train_resources).
HARDWARE_RESOURCES = dict(
    mem_mb=lambda wildcards, input, attempt: int(2000 + 3 * input.size_mb) * attempt,
    runtime=lambda wildcards, attempt: 15 * attempt,
    **GPUS.train_request,
)


rule measure_hardware:
    input:
        dataset="results/data/{dataset}.npz",
    output:
        "results/hardware/{dataset}-{arch}.parquet",
    log:
        "logs/measure_hardware/{dataset}-{arch}.log",
    benchmark:
        "results/benchmarks/measure_hardware/{dataset}-{arch}.tsv"
    conda:
        "../../envs/train.yaml"
    threads: HARDWARE_THREADS
    resources:
        **HARDWARE_RESOURCES,
    params:
        threads=TRAINING["threads"],
        settings=lambda w: grid.hardware_settings(RUNS, w.dataset, w.arch),
        max_batch_size=HARDWARE["max_batch_size"],
        warmup_steps=HARDWARE["warmup_steps"],
        repeats=HARDWARE["repeats"],
        device=TRAINING["device"],
    script:
        "../scripts/measure_hardware.py"


rule combine_hardware:
    input:
        [f"results/hardware/{d}-{a}.parquet" for d, a in HARDWARE_PAIRS],
    output:
        "results/tables/hardware.parquet",
    log:
        "logs/combine_hardware.log",
    localrule: LIGHT_LOCAL
    conda:
        "../../envs/analysis.yaml"
    resources:
        **LIGHT_RESOURCES,
    params:
        # the measured pairs: the table is made again when they change (the profile does not rerun a job
        # for a changed set of input files), e.g. when `hardware.enabled` is switched off
        pairs=HARDWARE_PAIRS,
        code=code_of("workflow/scripts/combine_hardware.py"),
    script:
        "../scripts/combine_hardware.py"
