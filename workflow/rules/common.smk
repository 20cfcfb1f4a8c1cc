# Config validation, paths and the arguments every `stage` call gets.
import os
import shlex

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

import stage.config
from stage.data.nuscenes_source import planned_scene_names

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
# Relative where they can be (Snakemake makes --configfile paths absolute): commands, and so dvc.yaml and
# Snakemake's params trigger, must not depend on where the clone lives.
CONFIG_FILES = [os.path.relpath(f) if not os.path.relpath(f).startswith("..") else str(f) for f in CONFIG_FILES]
CONFIG_ARGS = " ".join(f"--config {shlex.quote(str(f))}" for f in CONFIG_FILES)
ENV = "../envs/stage.yaml"


def stage_cmd(command):
    """The `stage` CLI call of a rule, with the workflow's config files (pass it as a param)."""
    return f"stage {command} {CONFIG_ARGS}"


def distributed_cmd(command):
    """A param function: `stage <command>`, under torchrun with one process per GPU when the job is granted
    several (resource gpu: train.gpus, 4 in config/paper.yaml); DDP picks nccl on GPUs, gloo on CPUs."""

    def cmd(wildcards, resources):
        gpus = int(getattr(resources, "gpu", 0) or 0)
        if gpus > 1:
            return f"torchrun --standalone --nproc_per_node {gpus} -m stage {command} {CONFIG_ARGS}"
        return stage_cmd(command)

    return cmd


R = config["results_dir"]
DATA = config["dataset"]
SYNTHETIC = DATA["source"] == "synthetic"
if not SYNTHETIC and not DATA["dataroot"]:
    raise WorkflowError("dataset.source is nuscenes but dataset.dataroot is not set: point it at the nuScenes root")
DATAROOT = f"{R}/world" if SYNTHETIC else DATA["dataroot"]


def sized(job, **cpu):
    """A job's resources: on GPUs (train.gpus / rollout.gpus above 0) from the memory plan (stage/resources.py:
    gpu_mem_mb, mem_mb, runtime), on the CPU the rule's own `cpu` ones."""
    if not config["train" if job.startswith("train") else "rollout"]["gpus"]:
        return cpu
    from stage.resources import job_resources

    return {**cpu, **job_resources(config, job)}


def logged(name):
    """log: and benchmark: paths of a rule (wildcards allowed in name)."""
    return {"log": f"{R}/logs/{name}.log", "benchmark": f"{R}/benchmarks/{name}.tsv"}


# Variants and their checkpoints (training.smk): one stage-1 run serves every variant.
VARIANTS = config["train"]["variants"]
TRAINED = [v for v, spec in VARIANTS.items() if spec.get("trained_as") is None]
TRAIN_CACHE = f"{R}/latents/{DATA['train_split']}"


def run_dir(stage, variant=None):
    return f"{R}/checkpoints/stage1" if stage == 1 else f"{R}/checkpoints/{variant}/stage{stage}"


def run_files(stage, variant=None):
    return [f"{run_dir(stage, variant)}/{name}" for name in ("model.safetensors", "conditions.safetensors")]


def variant_run(variant):
    """The run directory holding a variant's final model."""
    spec = VARIANTS[variant]
    return run_dir(spec["last_stage"], spec.get("trained_as") or variant)


# Rollouts (rollout.smk) and the autoencoder input of the rules that decode or encode.
PRETRAINED_AE = config["autoencoder"]["source"] != "embedded"
_long = planned_scene_names(config, DATA["long_split"])
_pick = DATA["rollout_scenes"]
ROLLOUT_SCENES = _long if _pick is None else _long[:_pick] if isinstance(_pick, int) else list(_pick)
# A stream is one (held-out scene, rollout seed): every variant is rolled out on the same streams, as one
# batched job per variant; the teacher-forced one-step runs use the first seed of every scene.
SEEDS = config["rollout"]["seeds"]
STREAMS = [(s, k) for s in ROLLOUT_SCENES for k in SEEDS]
ONE_STEP_STREAMS = [(s, SEEDS[0]) for s in ROLLOUT_SCENES]


def stream_dirs(root, variant, streams):
    return [f"{root}/{variant}/{scene}/seed-{seed}" for scene, seed in streams]


ROLLOUTS = [d for v in VARIANTS for d in stream_dirs(f"{R}/rollouts", v, STREAMS)]
ONE_STEP = [d for v in VARIANTS for d in stream_dirs(f"{R}/one_step", v, ONE_STEP_STREAMS)]
AE_INPUT = [] if PRETRAINED_AE else [f"{R}/autoencoder"]


def ae_arg(wildcards, input):
    return f"--autoencoder {input.autoencoder[0]}" if input.autoencoder else ""
