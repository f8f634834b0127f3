rule aggregate_runs:
    # The runs trained in this invocation arrive with their packs' receipts; the runs of the study are its
    # params, so the tables are made again when the set of runs changes (and not otherwise).
    input:
        receipts=[grid.receipt_path(pack) for pack in PACKS],
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
        runs=grid.RunIds(spec["run_id"] for spec in RUNS),
        runs_root=RUNS_ROOT,
        targets=grid.targets(STUDY),
        code=code_of("workflow/scripts/aggregate_runs.py"),
    script:
        "../scripts/aggregate_runs.py"
