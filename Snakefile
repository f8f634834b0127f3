# batchlab: how batch size shapes neural-network training.
# Run the default study with `snakemake --cores all`; another study with `--configfile configs/<study>.yaml`.
from snakemake.utils import min_version

min_version("9.0")


# config.yaml is the default study; a --configfile given on the command line replaces it.
if not workflow.config_settings.configfiles:

    configfile: f"{workflow.basedir}/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/hardware.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/interpolation.smk"
include: "workflow/rules/notebooks.smk"
include: "workflow/rules/paper.smk"
include: "workflow/rules/archive.smk"


rule all:
    default_target: True
    input:
        "paper/paper.pdf",
        expand("results/notebooks/{notebook}.html", notebook=NOTEBOOKS),
