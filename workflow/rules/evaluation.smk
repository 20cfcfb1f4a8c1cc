# Evaluation (FID/FVD or labelled proxies, drift, paired and temporal metrics), figures and the report.


rule reconstruct:
    # The ceiling row: ground truth through the autoencoder.
    input:
        data=f"{R}/extracted/{DATA['long_split']}",
        autoencoder=AE_INPUT,
    output:
        directory(f"{R}/reconstructions/{DATA['long_split']}"),
    params:
        cmd=stage_cmd("reconstruct"),
        ae_arg=ae_arg,
        autoencoder=config["autoencoder"],
    log:
        logged("reconstruct")["log"],
    benchmark:
        logged("reconstruct")["benchmark"]
    conda:
        ENV
    threads: 1  # off the critical path, beside 1-thread training: 75 CPU-s on 1 thread, 85 on 2 [measured]
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "{params.cmd} --data {input.data} {params.ae_arg} --out {output} --log {log} --threads {threads}"


rule evaluate:
    input:
        rollouts=ROLLOUTS,
        ground_truth=f"{R}/extracted/{DATA['long_split']}",
        reconstructions=f"{R}/reconstructions/{DATA['long_split']}",
    output:
        metrics=f"{R}/metrics.json",
        segments=f"{R}/evaluation/segments.csv",
        stats=directory(f"{R}/evaluation/real_stats"),
    params:
        cmd=stage_cmd("evaluate"),
        out=lambda w, output: os.path.dirname(output.segments),
        rollouts=lambda w, input: os.path.dirname(os.path.dirname(input.rollouts[0])),
        evaluate=config["evaluate"],
    log:
        logged("evaluate")["log"],
    benchmark:
        logged("evaluate")["benchmark"]
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    shell:
        "{params.cmd} --rollouts {params.rollouts} --ground-truth {input.ground_truth} "
        "--reconstructions {input.reconstructions} --out {params.out} --metrics {output.metrics} --log {log} "
        "--threads {threads}"


rule figures:
    input:
        metrics=f"{R}/metrics.json",
        segments=f"{R}/evaluation/segments.csv",
        rollouts=ROLLOUTS,
        losses=[f"{R}/plots/loss_stage1.csv"]
        + [f"{R}/plots/loss_{v}_stage{s}.csv" for v in TRAINED for s in (2, 3)],
    output:
        [f"{R}/figures/{name}.png" for name in ("drift", "strips", "losses")],
    params:
        cmd=stage_cmd("figures"),
        results=lambda w, output: os.path.dirname(os.path.dirname(output[0])),
    log:
        logged("figures")["log"],
    benchmark:
        logged("figures")["benchmark"]
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    shell:
        "{params.cmd} --results {params.results} --log {log} --threads {threads}"


rule report:
    input:
        rules.figures.output,
        f"{R}/figures/contact_sheet.png",
        f"{R}/metrics.json",
        f"{R}/metrics/autoencoder_metrics.json" if not PRETRAINED_AE else [],
    output:
        f"{R}/report.pdf",
    params:
        cmd=stage_cmd("report"),
        results=lambda w, output: os.path.dirname(output[0]),
    log:
        logged("report")["log"],
    benchmark:
        logged("report")["benchmark"]
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    shell:
        "{params.cmd} --results {params.results} --out {output} --log {log} --threads {threads}"
