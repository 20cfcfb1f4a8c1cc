# STAGE: streaming autoregressive diffusion world model, from data to report.
# A table of contents: one rules file per link of the chain, every rule calls the `stage` CLI.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/latents.smk"
include: "workflow/rules/training.smk"
include: "workflow/rules/rollout.smk"
include: "workflow/rules/evaluation.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        f"{R}/report.pdf",
    default_target: True
