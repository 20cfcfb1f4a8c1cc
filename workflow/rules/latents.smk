# Latent space: the embedded autoencoder (trained here unless the SD VAE is configured) and the latent cache.


rule train_autoencoder:
    input:
        f"{R}/extracted/{DATA['train_split']}",
    output:
        model=directory(f"{R}/autoencoder"),
        metrics=f"{R}/metrics/autoencoder_metrics.json",
        loss=f"{R}/plots/autoencoder_loss.csv",
    params:
        cmd=stage_cmd("train-autoencoder"),
        autoencoder=config["autoencoder"],
    log:
        logged("train_autoencoder")["log"],
    benchmark:
        logged("train_autoencoder")["benchmark"]
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    shell:
        "{params.cmd} --data {input} --out {output.model} --metrics {output.metrics} --loss-log {output.loss} "
        "--log {log} --threads {threads}"


rule encode:
    input:
        data=f"{R}/extracted/{{split}}",
        autoencoder=AE_INPUT,
    output:
        directory(f"{R}/latents/{{split}}"),
    params:
        cmd=stage_cmd("encode"),
        ae_arg=ae_arg,
        autoencoder=config["autoencoder"],
        conditions=config["conditions"],
        cache=config["cache"],
    log:
        logged("encode/{split}")["log"],
    benchmark:
        logged("encode/{split}")["benchmark"]
    conda:
        ENV
    threads: 2
    # Both caches before the 1-thread reconstruct: otherwise reconstruct may start first and hold a core,
    # the 2-thread encode of the training split (on the critical path) waits for it, and stage 1 then
    # trains alone on one core. Measured: stage 1 started 186 s after the autoencoder finished, 103 s with this.
    priority: 1
    resources:
        mem_mb=8000,
        runtime=60,
    shell:
        "{params.cmd} --data {input.data} {params.ae_arg} --out {output} --log {log} --threads {threads}"
