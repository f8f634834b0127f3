rule aggregate_runs:
    input:
        summaries=[summary_file(spec) for spec in RUNS],
    output:
        history="results/tables/history.parquet",
        runs="results/tables/runs.parquet",
    log:
        "logs/aggregate_runs.log",
    benchmark:
        "results/benchmarks/aggregate_runs.tsv"
    localrule: LIGHT_LOCAL
    conda:
        "../../envs/analysis.yaml"
    resources:
        **LIGHT_RESOURCES,
    params:
        targets=grid.targets(STUDY),
    script:
        "../scripts/aggregate_runs.py"
