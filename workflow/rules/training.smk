# Three-stage training. Stage 1 never uses HTFT, so one stage-1 run serves every variant; stages 2 and 3
# run for the variants trained on their own (train.variants: trained_as null), the others reuse a
# checkpoint (stages_1_2 = full's stage 2, no_htft_1_2 = no_htft's stage 2, stage1_only = stage 1). Runs always pass --resume: the
# checkpoints/ folder inside a run directory is not a declared output, so Snakemake keeps it when it
# reruns a killed job, and training continues from the last checkpoint. For the same reason the loss log
# stays in the run directory while training appends to it, and is copied out when the run is done.


VAL_CACHE = f"{R}/latents/{DATA['long_split']}"  # held-out scenes: the validation loss of every run


def train_outputs(stage, variant=None):
    """A run's weights, and the loss log, validation log and metrics copied out of its directory."""
    name = f"stage{stage}" if variant is None else f"{variant}_stage{stage}"
    return dict(model=run_files(stage, variant), loss=f"{R}/plots/loss_{name}.csv",
                validation=f"{R}/plots/validation_{name}.csv", metrics=f"{R}/metrics/train_{name}_metrics.json")


def train_shell(stage, variant_args=""):
    return (
        "{params.cmd} --stage " + str(stage) + " " + variant_args + "--cache {input.cache} "
        "--val-cache {input.val_cache} --out {params.run} --resume --metrics {output.metrics} --log {log} "
        "--threads {threads} && cp {params.run}/loss.csv {output.loss} "
        "&& cp {params.run}/validation.csv {output.validation}"
    )


TRAIN_PARAMS = dict(
    cmd=distributed_cmd("train"),
    run=lambda w, output: os.path.dirname(output.model[0]),
    train=config["train"],
    model=config["model"],
    diffusion=config["diffusion"],
    conditions=config["conditions"],
)
LATER_STAGE = "--variant {wildcards.variant} --init {params.init} "  # stages 2 and 3: a variant, from the last stage
# Stages 2 and 3 lead to the last rollouts: run them ahead of the rollouts that earlier checkpoints already
# allow, so every rollout is ready early and the short one-step jobs fill the cores at the end.
TRAINING_PRIORITY = 2


rule train_stage1:
    input:
        cache=TRAIN_CACHE,
        val_cache=VAL_CACHE,
    output:
        **train_outputs(1),
    params:
        **TRAIN_PARAMS,
    log:
        logged("train_stage1")["log"],
    benchmark:
        logged("train_stage1")["benchmark"]
    conda:
        ENV
    threads: 1
    resources:
        **sized("train_stage1", mem_mb=8000, runtime=240),
        gpu=config["train"]["gpus"],
    shell:
        train_shell(1)


rule train_stage2:
    input:
        cache=TRAIN_CACHE,
        val_cache=VAL_CACHE,
        init=run_files(1),
    output:
        **train_outputs(2, "{variant}"),
    params:
        **TRAIN_PARAMS,
        init=lambda w, input: os.path.dirname(input.init[0]),
    wildcard_constraints:
        variant="|".join(TRAINED),
    log:
        logged("train_stage2/{variant}")["log"],
    benchmark:
        logged("train_stage2/{variant}")["benchmark"]
    conda:
        ENV
    threads: 1
    priority: TRAINING_PRIORITY
    resources:
        **sized("train_stage2", mem_mb=8000, runtime=240),
        gpu=config["train"]["gpus"],
    shell:
        train_shell(2, LATER_STAGE)


rule train_stage3:
    input:
        cache=TRAIN_CACHE,
        val_cache=VAL_CACHE,
        init=run_files(2, "{variant}"),
    output:
        **train_outputs(3, "{variant}"),
    params:
        **TRAIN_PARAMS,
        init=lambda w, input: os.path.dirname(input.init[0]),
    wildcard_constraints:
        variant="|".join(TRAINED),
    log:
        logged("train_stage3/{variant}")["log"],
    benchmark:
        logged("train_stage3/{variant}")["benchmark"]
    conda:
        ENV
    threads: 1
    priority: TRAINING_PRIORITY
    resources:
        **sized("train_stage3", mem_mb=8000, runtime=240),
        gpu=config["train"]["gpus"],
    shell:
        train_shell(3, LATER_STAGE)
