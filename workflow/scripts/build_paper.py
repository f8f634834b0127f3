# Build paper/paper.pdf with latexmk (see batchlab.paper).
from batchlab.paper import build

build(snakemake.input.tex, snakemake.input.bib, snakemake.output[0], snakemake.log[0],
      sections=snakemake.input.sections)
