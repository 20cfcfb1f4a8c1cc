# Streaming rollouts: one batched job per variant generates every stream (held-out scene x seed), and one
# more the teacher-forced one-step runs. A stream works in a hidden .partial folder beside its output and
# renames it when done; --resume continues a killed job from the streams' last common state checkpoint.


def rollout_inputs(wildcards):
    return {
        "model": [f"{variant_run(wildcards.variant)}/{n}" for n in ("model.safetensors", "conditions.safetensors")],
        "autoencoder": AE_INPUT,
        "cache": f"{R}/latents/{DATA['long_split']}",
        "data": f"{R}/extracted/{DATA['long_split']}",
        "world": [f"{R}/world"] if SYNTHETIC else [],
    }


def rollout_shell(extra):
    return (
        "{params.cmd} --checkpoint {params.run} {params.ae_arg} --cache {input.cache} --data {input.data} "
        "--dataroot {params.dataroot} --variant {wildcards.variant} --scenes {params.scenes} "
        "--seeds {params.seeds} --out {params.out} " + extra + "--resume --log {log} --threads {threads}"
    )


ROLLOUT_PARAMS = dict(
    cmd=stage_cmd("rollout"),
    run=lambda w, input: os.path.dirname(input.model[0]),
    ae_arg=ae_arg,
    dataroot=lambda w, input: input.world[0] if SYNTHETIC else DATAROOT,
    scenes=" ".join(ROLLOUT_SCENES),
    rollout=config["rollout"],
    autoencoder=config["autoencoder"],
)


rule rollout:
    input:
        unpack(rollout_inputs),
    output:
        [directory(d) for d in stream_dirs(f"{R}/rollouts", "{variant}", STREAMS)],
    params:
        **ROLLOUT_PARAMS,
        seeds=" ".join(map(str, SEEDS)),
        out=f"{R}/rollouts/{{variant}}",
    wildcard_constraints:
        variant="|".join(VARIANTS),
    log:
        logged("rollout/{variant}")["log"],
    benchmark:
        logged("rollout/{variant}")["benchmark"]
    conda:
        ENV
    # One thread per batched job, two jobs side by side: the small UNet gains less from a second thread
    # than from a second job.
    threads: 1
    # Long jobs first, the short one-step jobs after them, where they fill a core beside the last rollout.
    priority: 1
    resources:
        **sized("rollout", mem_mb=4000, runtime=240),
        gpu=config["rollout"]["gpus"],
    shell:
        rollout_shell("")


rule one_step:
    # Teacher-forced next frames (the real previous frame as condition): does the per-frame model work?
    input:
        unpack(rollout_inputs),
    output:
        [directory(d) for d in stream_dirs(f"{R}/one_step", "{variant}", ONE_STEP_STREAMS)],
    params:
        **ROLLOUT_PARAMS,
        seeds=SEEDS[0],
        out=f"{R}/one_step/{{variant}}",
    wildcard_constraints:
        variant="|".join(VARIANTS),
    log:
        logged("one_step/{variant}")["log"],
    benchmark:
        logged("one_step/{variant}")["benchmark"]
    conda:
        ENV
    threads: 1
    resources:
        **sized("one_step", mem_mb=4000, runtime=60),
        gpu=config["rollout"]["gpus"],
    shell:
        rollout_shell("--teacher-forced ")
