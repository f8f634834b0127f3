rule prepare_dataset:
    output:
        "results/data/{dataset}.npz",
    log:
        "logs/prepare_dataset/{dataset}.log",
    localrule: LIGHT_LOCAL
    conda:
        "../../envs/train.yaml"
    resources:
        **LIGHT_RESOURCES,
    params:
        options=lambda w: grid.dataset_options(STUDY, w.dataset),
        data_dir=STUDY["data_dir"],
        verify=STUDY["verify_data_files"],
    script:
        "../scripts/prepare_dataset.py"


# The datasets read from the user's files, fetched from their publishers' mirrors (download.mirrors) into
# data_dir, resumed, verified and only then renamed into place. Never implicit: no rule depends on it; run
# `snakemake --cores 1 download_data`. Local: compute nodes often cannot reach the network.
rule download_data:
    log:
        "logs/download_data.log",
    localrule: True
    conda:
        "../../envs/train.yaml"
    params:
        datasets=[name for name in STUDY["datasets"] if name in fetch.REMOTES],
        mirrors=STUDY["download"]["mirrors"],
        data_dir=STUDY["data_dir"],
        verify=STUDY["verify_data_files"],
    script:
        "../scripts/download_data.py"


# A dataset of the user's own (config `builders.datasets`): its loader is imported by the job, and what it
# returns is checked against the declared shape, classes and training set size before it is saved.
from batchlab import builders  # noqa: E402

USER_DATASETS = [d for d in STUDY["datasets"] if d in STUDY["builders"]["datasets"]]

if USER_DATASETS:

    ruleorder: prepare_user_dataset > prepare_dataset

    rule prepare_user_dataset:
        output:
            "results/data/{dataset}.npz",
        log:
            "logs/prepare_user_dataset/{dataset}.log",
        wildcard_constraints:
            dataset="|".join(USER_DATASETS),
        localrule: LIGHT_LOCAL
        conda:
            "../../envs/train.yaml"
        resources:
            **LIGHT_RESOURCES,
        params:
            options=lambda w: grid.dataset_options(STUDY, w.dataset),
            declaration=lambda w: builders.dataset_declaration(STUDY, w.dataset),
            data_dir=STUDY["data_dir"],
        script:
            "../scripts/prepare_dataset.py"
