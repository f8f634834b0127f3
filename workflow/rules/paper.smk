# The paper: numbers.tex holds every number the text quotes, generated from the tables; latexmk builds
# paper/paper.pdf from the LaTeX source, the figures and the numbers.


rule write_numbers:
    input:
        history="results/tables/history.parquet",
        runs="results/tables/runs.parquet",
        hardware="results/tables/hardware.parquet",
        interpolation="results/tables/interpolation.parquet",
    output:
        "paper/numbers.tex",
    log:
        "logs/write_numbers.log",
    localrule: LIGHT_LOCAL
    conda:
        "../../envs/analysis.yaml"
    resources:
        **LIGHT_RESOURCES,
    params:
        study=STUDY["study"],
        code=code_of("workflow/scripts/write_numbers.py"),
    script:
        "../scripts/write_numbers.py"


rule build_paper:
    input:
        tex=source("paper/paper.tex"),
        bib=source("paper/refs.bib"),
        # the paper's sections (\input from paper/sections/)
        sections=sorted(str(p) for p in Path(source("paper/sections")).glob("*.tex")),
        numbers="paper/numbers.tex",
        figures=expand("paper/figures/{figure}.pdf", figure=FIGURES),
    output:
        "paper/paper.pdf",
    log:
        "logs/build_paper.log",
    localrule: LIGHT_LOCAL
    conda:
        "../../envs/analysis.yaml"
    resources:
        **LIGHT_RESOURCES,
    params:
        code=code_of("workflow/scripts/build_paper.py"),
    script:
        "../scripts/build_paper.py"
