# The study packed for a reader who rebuilds its paper without training (batchlab.archive;
# docs/reproducing.md): the config as validated, the run store of the study's runs (final weights included,
# checkpoints left out), the tables, the hardware and interpolation measurements, the lock file, the code
# revision and the SHA-256 of each file, in one results/archive/<study>.tar.gz. Not part of `all`:
# `snakemake --cores 1 archive`.


rule archive:
    input:
        # the tables come after every run is trained; write_numbers reads these four
        tables=[
            f"results/tables/{table}.parquet"
            for table in ("history", "runs", "hardware", "interpolation")
        ],
        hardware=[f"results/hardware/{d}-{a}.parquet" for d, a in HARDWARE_PAIRS],
        interpolation=INTERPOLATION_PARTS,
        numbers="paper/numbers.tex",
        lock=LOCK,
    output:
        f"results/archive/{STUDY['study']}.tar.gz",
    log:
        "logs/archive.log",
    localrule: LIGHT_LOCAL
    conda:
        "../../envs/analysis.yaml"
    resources:
        **LIGHT_RESOURCES,
    params:
        # the study as validated: the archive is made again when the config changes
        study=STUDY,
        runs=grid.RunIds(spec["run_id"] for spec in RUNS),
        code=code_of("workflow/scripts/archive_study.py"),
    script:
        "../scripts/archive_study.py"
