# STAGE: streaming autoregressive diffusion world model, from data to report.
# A table of contents: one rules file per link of the chain, every rule calls the `stage` CLI.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/latents.smk"


rule all:
    # The furthest output of the chain so far; results/report.pdf once the report exists.
    input:
        FINAL_TARGETS,
    default_target: True
