# Three-stage training. Stage 1 never uses HTFT, so one stage-1 run serves every variant; stages 2 and 3
# run for the variants trained on their own (train.variants: trained_as null), the others reuse a
# checkpoint (stages_1_2 = full's stage 2, no_htft_1_2 = no_htft's stage 2, stage1_only = stage 1). Runs always pass --resume: the
# checkpoints/ folder inside a run directory is not a declared output, so Snakemake keeps it when it
# reruns a killed job, and training continues from the last checkpoint. For the same reason the loss log
# stays in the run directory while training appends to it, and is copied out when the run is done.


VAL_CACHE = f"{R}/latents/{DATA['long_split']}"  # held-out scenes: the validation loss of every run


rule train_stage1:
    input:
        cache=TRAIN_CACHE,
        val_cache=VAL_CACHE,
    output:
        model=run_files(1),
        loss=f"{R}/plots/loss_stage1.csv",
        validation=f"{R}/plots/validation_stage1.csv",
        metrics=f"{R}/metrics/train_stage1_metrics.json",
    params:
        cmd=distributed_cmd("train"),
        run=lambda w, output: os.path.dirname(output.model[0]),
        train=config["train"],
        model=config["model"],
        diffusion=config["diffusion"],
        conditions=config["conditions"],
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
        "{params.cmd} --stage 1 --cache {input.cache} --val-cache {input.val_cache} --out {params.run} --resume "
        "--metrics {output.metrics} --log {log} --threads {threads} && cp {params.run}/loss.csv {output.loss} "
        "&& cp {params.run}/validation.csv {output.validation}"


rule train_stage2:
    input:
        cache=TRAIN_CACHE,
        val_cache=VAL_CACHE,
        init=run_files(1),
    output:
        model=run_files(2, "{variant}"),
        loss=f"{R}/plots/loss_{{variant}}_stage2.csv",
        validation=f"{R}/plots/validation_{{variant}}_stage2.csv",
        metrics=f"{R}/metrics/train_{{variant}}_stage2_metrics.json",
    params:
        cmd=distributed_cmd("train"),
        init=lambda w, input: os.path.dirname(input.init[0]),
        run=lambda w, output: os.path.dirname(output.model[0]),
        train=config["train"],
        model=config["model"],
        diffusion=config["diffusion"],
        conditions=config["conditions"],
    wildcard_constraints:
        variant="|".join(TRAINED),
    log:
        logged("train_stage2/{variant}")["log"],
    benchmark:
        logged("train_stage2/{variant}")["benchmark"]
    conda:
        ENV
    threads: 1
    resources:
        **sized("train_stage2", mem_mb=8000, runtime=240),
        gpu=config["train"]["gpus"],
    shell:
        "{params.cmd} --stage 2 --variant {wildcards.variant} --cache {input.cache} --val-cache {input.val_cache} "
        "--init {params.init} "
        "--out {params.run} --resume --metrics {output.metrics} --log {log} --threads {threads} "
        "&& cp {params.run}/loss.csv {output.loss} && cp {params.run}/validation.csv {output.validation}"


rule train_stage3:
    input:
        cache=TRAIN_CACHE,
        val_cache=VAL_CACHE,
        init=run_files(2, "{variant}"),
    output:
        model=run_files(3, "{variant}"),
        loss=f"{R}/plots/loss_{{variant}}_stage3.csv",
        validation=f"{R}/plots/validation_{{variant}}_stage3.csv",
        metrics=f"{R}/metrics/train_{{variant}}_stage3_metrics.json",
    params:
        cmd=distributed_cmd("train"),
        init=lambda w, input: os.path.dirname(input.init[0]),
        run=lambda w, output: os.path.dirname(output.model[0]),
        train=config["train"],
        model=config["model"],
        diffusion=config["diffusion"],
        conditions=config["conditions"],
    wildcard_constraints:
        variant="|".join(TRAINED),
    log:
        logged("train_stage3/{variant}")["log"],
    benchmark:
        logged("train_stage3/{variant}")["benchmark"]
    conda:
        ENV
    threads: 1
    resources:
        **sized("train_stage3", mem_mb=8000, runtime=240),
        gpu=config["train"]["gpus"],
    shell:
        "{params.cmd} --stage 3 --variant {wildcards.variant} --cache {input.cache} --val-cache {input.val_cache} "
        "--init {params.init} "
        "--out {params.run} --resume --metrics {output.metrics} --log {log} --threads {threads} "
        "&& cp {params.run}/loss.csv {output.loss} && cp {params.run}/validation.csv {output.validation}"
