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
