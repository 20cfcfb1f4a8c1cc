# Data: the embedded nuScenes-format world, and per-scene clips with layouts extracted from it.


rule synth:
    output:
        directory(f"{R}/world"),
    params:
        cmd=stage_cmd("synth"),
        synth=config["synth"],
        dataset=config["dataset"],
    log:
        logged("synth")["log"],
    benchmark:
        logged("synth")["benchmark"]
    conda:
        ENV
    threads: 2  # one rendering process per thread; nothing else can run before the world exists
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "{params.cmd} --out {output} --log {log} --threads {threads}"


rule extract:
    input:
        [f"{R}/world"] if SYNTHETIC else [],
    output:
        directory(f"{R}/extracted/{{split}}"),
    params:
        cmd=stage_cmd("extract"),
        dataroot=lambda w, input: input[0] if SYNTHETIC else DATAROOT,
        extract=config["extract"],
        dataset=config["dataset"],
    log:
        logged("extract/{split}")["log"],
    benchmark:
        logged("extract/{split}")["benchmark"]
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=8000,
        runtime=120,
    shell:
        "{params.cmd} --dataroot {params.dataroot} --version {params.dataset[version]} "
        "--split {wildcards.split} --out {output} --log {log} --threads {threads}"


rule contact_sheet:
    input:
        f"{R}/extracted/{DATA['train_split']}",
    output:
        f"{R}/figures/contact_sheet.png",
    params:
        cmd=stage_cmd("contact-sheet"),
    log:
        logged("contact_sheet")["log"],
    benchmark:
        logged("contact_sheet")["benchmark"]
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "{params.cmd} --data {input} --out {output} --log {log} --threads {threads}"
