# Analysis notebooks, executed by papermill with their parameters (tables in, figures out). The executed
# copies are kept under results/notebooks/ and rendered to HTML; each figure is written as PDF (for the
# paper) and PNG (for `snakemake --report`).
NOTEBOOKS = {
    "learning_rate": ["accuracy_vs_base_lr", "heatmap", "best_lr", "noise_temperature"],
    "batch_size": [
        "learning_curves",
        "generalization_gap",
        "steps_to_target",
        "noise_scale",
        "distance",
        "grad_norms",
        "critical_batch",
    ],
    "interpolation": ["interpolation", "sharpness"],
    "variants": ["batch_schedules", "budgets"],
}
# Tables a notebook reads beside the history and runs tables; each reaches it as the parameter
# <name>_path (e.g. hardware -> hardware_path).
NOTEBOOK_TABLES = {
    "interpolation": {"interpolation": "results/tables/interpolation.parquet"},
}
# time to target on this hardware (workflow/rules/hardware.smk)
NOTEBOOKS["hardware"] = ["time_to_target"]
NOTEBOOK_TABLES["hardware"] = {"hardware": "results/tables/hardware.parquet"}
FIGURES = [figure for figures in NOTEBOOKS.values() for figure in figures]

for notebook, figures in NOTEBOOKS.items():

    rule:
        name:
            f"render_figures_{notebook}"
        input:
            **NOTEBOOK_TABLES.get(notebook, {}),
            notebook=source(f"workflow/notebooks/{notebook}.ipynb"),
            history="results/tables/history.parquet",
            runs="results/tables/runs.parquet",
        output:
            executed=f"results/notebooks/{notebook}.ipynb",
            html=f"results/notebooks/{notebook}.html",
            pdfs=[f"paper/figures/{figure}.pdf" for figure in figures],
            pngs=[
                report(
                    f"paper/figures/{figure}.png",
                    caption=f"../report/{figure}.rst",
                    category="Figures",
                    subcategory=notebook.replace("_", " "),
                )
                for figure in figures
            ],
        log:
            f"logs/render_figures/{notebook}.log",
        localrule: LIGHT_LOCAL
        conda:
            "../../envs/analysis.yaml"
        resources:
            **LIGHT_RESOURCES,
        script:
            "../scripts/run_notebook.py"
