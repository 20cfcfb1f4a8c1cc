# The report: figures, metrics tables and videos flagged for Snakemake's HTML report
#   snakemake --report results/workflow.html
# (the variants' videos, played side by side, beside the figures and tables), and the PDF, the one-file
# summary. Captions are workflow/report/*.rst (paths here are relative to this file).


report: "../report/workflow.rst"


REPORT_FIGURES = ["drift_psnr", "drift_kid", "collapse", "strips", "losses", "noise_levels"]
SHOWN_STREAM = STREAMS[0]  # the stream of the frame strip and the videos: (scene, seed)


rule figures:
    input:
        metrics=f"{R}/metrics.json",
        segments=f"{R}/evaluation/segments.csv",
        rollouts=ROLLOUTS,
        ground_truth=f"{R}/extracted/{DATA['long_split']}",
        losses=[f"{R}/plots/loss_stage1.csv"]
        + [f"{R}/plots/loss_{v}_stage{s}.csv" for v in TRAINED for s in (2, 3)],
    output:
        figures=[
            report(f"{R}/figures/{name}.png", caption=f"../report/{name}.rst", category="Figures")
            for name in REPORT_FIGURES
        ],
        table=report(
            f"{R}/figures/metrics_table.html", caption="../report/metrics_table.rst", category="Claims and metrics"
        ),
        table_csv=report(
            f"{R}/figures/metrics_table.csv", caption="../report/metrics_table_csv.rst", category="Claims and metrics"
        ),
        side_by_side=report(
            f"{R}/videos/side_by_side.html", caption="../report/side_by_side.rst", category="Videos"
        ),
        side_by_side_mp4=f"{R}/videos/side_by_side.mp4",
        videos=[
            report(f"{R}/videos/{v}.mp4", caption="../report/video.rst", category="Videos", labels={"variant": v})
            for v in VARIANTS
        ],
    params:
        cmd=stage_cmd("figures"),
        results=lambda w, output: os.path.dirname(os.path.dirname(output.table)),
        scene=SHOWN_STREAM[0],
        seed=SHOWN_STREAM[1],
        rollout=config["rollout"],  # strip_frames and mp4_fps shape the strip and the side-by-side video
        diffusion=config["diffusion"],  # the noise-level figure
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
        "{params.cmd} --results {params.results} --scene {params.scene} --seed {params.seed} --log {log} "
        "--threads {threads}"


rule report:
    input:
        rules.figures.output.figures,
        rules.figures.output.table,
        f"{R}/figures/contact_sheet.png",
        f"{R}/metrics.json",
        f"{R}/metrics/autoencoder_metrics.json" if not PRETRAINED_AE else [],
    output:
        report(f"{R}/report.pdf", caption="../report/report_pdf.rst", category="Summary"),
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
