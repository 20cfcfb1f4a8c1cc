# Config validation, paths and the arguments every `stage` call gets.
import os
import shlex

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

import stage.config

# The same schema file the stage CLI reads (one schema, one place).
validate(config, str(stage.config.SCHEMA_PATH), set_default=True)

# The `stage` CLI reads the same config files as Snakemake, in the same order (later wins); a value that
# exists only on the snakemake command line (--config key=value) would not reach it, so refuse one.
_ordered = [f for f in workflow.configfiles if f not in workflow.overwrite_configfiles] + list(
    workflow.overwrite_configfiles
)
CONFIG_FILES = [f for i, f in enumerate(_ordered) if os.path.abspath(f) not in map(os.path.abspath, _ordered[:i])]
if stage.config.load(CONFIG_FILES) != config:
    raise WorkflowError(
        "snakemake --config key=value overrides are not supported: the stage commands read config files. "
        "Put the values in a YAML file and pass it with --configfile."
    )
CONFIG_ARGS = " ".join(f"--config {shlex.quote(str(f))}" for f in CONFIG_FILES)
ENV = "../envs/stage.yaml"


def stage_cmd(command):
    """The `stage` CLI call of a rule, with the workflow's config files (pass it as a param)."""
    return f"stage {command} {CONFIG_ARGS}"

R = config["results_dir"]
DATA = config["dataset"]
SYNTHETIC = DATA["source"] == "synthetic"
if not SYNTHETIC and not DATA["dataroot"]:
    raise WorkflowError("dataset.source is nuscenes but dataset.dataroot is not set: point it at the nuScenes root")
DATAROOT = f"{R}/world" if SYNTHETIC else DATA["dataroot"]
SPLITS = [DATA["train_split"], DATA["long_split"]]


def logged(name):
    """log: and benchmark: paths of a rule (wildcards allowed in name)."""
    return {"log": f"{R}/logs/{name}.log", "benchmark": f"{R}/benchmarks/{name}.tsv"}


FINAL_TARGETS = [f"{R}/latents/{s}" for s in SPLITS] + [f"{R}/figures/contact_sheet.png"]
