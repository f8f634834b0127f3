# Analysis notebooks, executed by papermill with their parameters (tables in, figures out). The executed
# copies are kept under results/notebooks/ and rendered to HTML; each figure is written as PDF (for the
# paper) and PNG (for `snakemake --report`). The notebooks and the figures of each are listed in
# common.smk. The config's analysis section (the spread between seeds the figures draw) reaches each
# notebook as its parameter analysis_settings; as a param, an edit of it draws the figures again.

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
        params:
            analysis=STUDY["analysis"],
            code=code_of(
                "workflow/scripts/run_notebook.py",
                f"workflow/notebooks/{notebook}.ipynb",
            ),
        script:
            "../scripts/run_notebook.py"
