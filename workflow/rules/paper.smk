# The paper: numbers.tex holds every number the text quotes, generated from the tables; reproducing.tex,
# the closing section, says what made the results and how to reproduce them; latexmk builds
# paper/paper.pdf from the LaTeX source, the figures and these two.
from batchlab import reproducing  # noqa: E402

# The lock file of the environment (requirements.lock, at the root of the source tree): its SHA-256 goes into
# the paper, and the file into the archive (archive.smk).
LOCK = source("requirements.lock")


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
        analysis=STUDY["analysis"],
        datasets=STUDY["datasets"],
        code=code_of("workflow/scripts/write_numbers.py"),
    script:
        "../scripts/write_numbers.py"


rule write_reproducing:
    input:
        lock=LOCK,
        # the datasets' SHA-256 come from the runs, which record the file each trained on: not the files
        # themselves, which a study rebuilt from its archive does not have (docs/reproducing.md)
        runs="results/tables/runs.parquet",
    output:
        "paper/reproducing.tex",
    log:
        "logs/write_reproducing.log",
    localrule: LIGHT_LOCAL
    conda:
        "../../envs/analysis.yaml"
    resources:
        **LIGHT_RESOURCES,
    params:
        study=STUDY["study"],
        # the study's config files as a reader types them (none: the default study, config.yaml)
        configfiles=reproducing.study_file(
            workflow.config_settings.configfiles, workflow.basedir, os.getcwd()
        ),
        code=code_of("workflow/scripts/write_reproducing.py"),
    script:
        "../scripts/write_reproducing.py"


rule build_paper:
    input:
        tex=source("paper/paper.tex"),
        bib=source("paper/refs.bib"),
        # the paper's sections (\input from paper/sections/)
        sections=sorted(str(p) for p in Path(source("paper/sections")).glob("*.tex")),
        numbers="paper/numbers.tex",
        reproducing="paper/reproducing.tex",
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
