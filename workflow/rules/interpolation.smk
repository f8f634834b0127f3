# The 1-D interpolation between each architecture's small- and large-batch solutions (Keskar et al. 2017;
# evaluation.interpolation): one job per dataset and architecture reads the runs table, picks the best
# learning rate at both batch sizes, and evaluates the weights along the line on the full training and test
# sets; a light job puts the study's table together (see batchlab.interpolation).
INTERPOLATIONS = grid.interpolation_jobs(STUDY)
INTERPOLATION = STUDY["evaluation"]["interpolation"]


rule interpolate_solutions:
    input:
        runs="results/tables/runs.parquet",
        dataset="results/data/{dataset}.npz",
    output:
        "results/interpolation/{dataset}-{arch}.parquet",
    log:
        "logs/interpolate_solutions/{dataset}-{arch}.log",
    benchmark:
        "results/benchmarks/interpolate_solutions/{dataset}-{arch}.tsv"
    conda:
        "../../envs/train.yaml"
    threads: 1
    # submitted like training on a cluster, where it takes the profile's GPU (and uses it when it has one);
    # a GPU slot on a local run with GPUs
    resources:
        **GPUS.slot_request,
        mem_mb=4000,
        runtime=60,
    params:
        # the small and the large batch size of this architecture's interpolation
        ends=lambda wildcards: grid.interpolation_ends(STUDY, wildcards.arch),
        points=INTERPOLATION["points"],
        alpha_min=INTERPOLATION["alpha_min"],
        alpha_max=INTERPOLATION["alpha_max"],
        runs_root=RUNS_ROOT,
        eval_batch_size=STUDY["evaluation"]["batch_size"],
        # a GPU when the job has one (none is asked for); never required
        device="cpu" if TRAINING["device"] == "cpu" else "auto",
    script:
        "../scripts/interpolate_solutions.py"


INTERPOLATION_PARTS = [
    f"results/interpolation/{job['dataset']}-{job['arch']}.parquet"
    for job in INTERPOLATIONS
]


rule combine_interpolations:
    # the parts are also its params, so the table is made again when the set of parts changes (one
    # architecture more or less, or the interpolation switched off), not only when a part does
    input:
        parts=INTERPOLATION_PARTS,
    output:
        "results/tables/interpolation.parquet",
    log:
        "logs/combine_interpolations.log",
    localrule: LIGHT_LOCAL
    conda:
        "../../envs/analysis.yaml"
    resources:
        **LIGHT_RESOURCES,
    params:
        parts=INTERPOLATION_PARTS,
        code=code_of("workflow/scripts/combine_interpolations.py"),
    script:
        "../scripts/combine_interpolations.py"
