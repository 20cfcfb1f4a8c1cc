# Evaluation (FID/FVD or labelled proxies, drift, paired and temporal metrics); figures and the report
# are in report.smk.


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
        one_step=ONE_STEP,
        ground_truth=f"{R}/extracted/{DATA['long_split']}",
        reconstructions=f"{R}/reconstructions/{DATA['long_split']}",
    output:
        metrics=f"{R}/metrics.json",
        segments=f"{R}/evaluation/segments.csv",
        streams=f"{R}/evaluation/streams.csv",
        differences=f"{R}/evaluation/differences.csv",
        stats=directory(f"{R}/evaluation/real_stats"),
    params:
        cmd=stage_cmd("evaluate"),
        out=lambda w, output: os.path.dirname(output.segments),
        rollouts=f"{R}/rollouts",
        one_step=f"{R}/one_step",
        evaluate=config["evaluate"],
    log:
        logged("evaluate")["log"],
    benchmark:
        logged("evaluate")["benchmark"]
    conda:
        ENV
    # Videos are scored in parallel, one torch thread each: the same numbers as one thread, twice as fast on 2 cores.
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    shell:
        "{params.cmd} --rollouts {params.rollouts} --one-step {params.one_step} --ground-truth {input.ground_truth} "
        "--reconstructions {input.reconstructions} --out {params.out} --metrics {output.metrics} --log {log} "
        "--threads {threads}"

