# Streaming rollouts: every variant on every chosen held-out long scene. A rollout works in a hidden
# .partial folder beside its output and renames it when done; --resume continues a killed one.


rule rollout:
    input:
        model=lambda w: [f"{variant_run(w.variant)}/{n}" for n in ("model.safetensors", "conditions.safetensors")],
        autoencoder=AE_INPUT,
        cache=f"{R}/latents/{DATA['long_split']}",
        data=f"{R}/extracted/{DATA['long_split']}",
        world=[f"{R}/world"] if SYNTHETIC else [],
    output:
        directory(f"{R}/rollouts/{{variant}}/{{scene}}"),
    params:
        cmd=stage_cmd("rollout"),
        run=lambda w, input: os.path.dirname(input.model[0]),
        ae_arg=ae_arg,
        dataroot=lambda w, input: input.world[0] if SYNTHETIC else DATAROOT,
        rollout=config["rollout"],
    wildcard_constraints:
        variant="|".join(VARIANTS),
        scene="|".join(ROLLOUT_SCENES),
    log:
        logged("rollout/{variant}/{scene}")["log"],
    benchmark:
        logged("rollout/{variant}/{scene}")["benchmark"]
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=config["rollout"]["gpus"],
    shell:
        "{params.cmd} --checkpoint {params.run} {params.ae_arg} --cache {input.cache} --data {input.data} "
        "--dataroot {params.dataroot} --scene {wildcards.scene} --variant {wildcards.variant} --out {output} "
        "--resume --log {log} --threads {threads}"
