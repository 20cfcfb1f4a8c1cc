"""Assemble the report from the pipeline's outputs (fixed layout under the results folder).

    <results>/metrics.json, evaluation/segments.csv      `stage evaluate` (format_version 2)
    <results>/rollouts/<variant>/<scene>/seed-<seed>/    `stage rollout` (frames.npy, video.mp4)
    <results>/extracted/<long split>/                    ground truth for the strip and the video
    <results>/plots/*loss*.csv, <results>/metrics/*.json training logs and their summaries
    <results>/figures/contact_sheet.png                  `stage contact-sheet`
    <results>/benchmarks/**/*.tsv                        Snakemake's wall time per step

make_figures (the `figures` rule) writes the PNGs, the metrics tables (CSV, HTML) and the videos for
Snakemake's report; build_report (the `report` rule) writes the one-file PDF summary.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

from stage.config import REPO_ROOT, section_hash
from stage.errors import StageError
from stage.formats import metrics
from stage.formats.metrics import Metrics
from stage.report import figures, findings, provenance, streams, tables, videos
from stage.report.pdf import PAGE_WIDTH, Report
from stage.report.published import PEERS, STAGE_PAPER

CM = 28.35  # points per centimetre
DRIFT = {"PSNR": "drift_psnr", "kid": "drift_kid"}  # figure file names per metric (the rule's outputs)
CAPTIONS = {
    "drift_psnr": "Paired PSNR per segment against the recorded frames (higher is better), one line per variant "
                  "with its 95% interval band; grey lines: baselines.",
    "drift_kid": "KID per segment against the pooled real distribution (lower is better), one line per variant "
                 "with its 95% interval band; grey lines: baselines.",
    "collapse": "Time to collapse, one marker per stream; hollow markers at the rollout length did not collapse.",
    "strips": "One stream: ground truth and each variant at T = {strip_frames} (1-based).",
    "losses": "Training loss per step (log scale) with its running mean, per training run.",
    "noise_levels": "Noise levels: the density of the training sigmas against the sigmas a sampling pass "
                    "evaluates the denoiser at (red; labels give the share of training sigmas beyond each).",
}


# ---- figures, tables and videos (`stage figures`) -------------------------------------------------------
def _shown_stream(m: Metrics, stream: tuple[str, int] | None) -> tuple[str, int]:
    """The stream of the strip and the videos: `stream` if metrics.json scored it, else its first one."""
    if stream is None:
        return m.streams[0]
    if tuple(stream) not in m.streams:
        scored = ", ".join(streams.stream_id(*s) for s in m.streams[:4]) + (", ..." if len(m.streams) > 4 else "")
        raise StageError(f"stream {streams.stream_id(*stream)} is not among the streams {m.path} scored "
                         f"({scored}); pick one of those")
    return tuple(stream)


def _stream_rows(results: Path, config: dict, variants: list[str], scene: str, seed: int) -> list:
    """(label, frames) of the ground truth and every variant on one stream."""
    gt = streams.ground_truth_frames(results / "extracted" / config["dataset"]["long_split"], scene)
    return [("ground truth", gt)] + [(v, streams.rollout_frames(results / "rollouts", v, scene, seed))
                                     for v in variants]


def _videos(results: Path, config: dict, variants: list[str], scene: str, seed: int, rows: list,
            title: str) -> dict[str, Path]:
    out = {f"video_{v}": videos.copy_video(streams.rollout_video(results / "rollouts", v, scene, seed),
                                           results / "videos" / f"{v}.mp4") for v in variants}
    mp4 = videos.side_by_side(rows, results / "videos" / "side_by_side.mp4", config["rollout"]["mp4_fps"])
    out["side_by_side"] = videos.video_page(mp4, results / "videos" / "side_by_side.html", title,
                                            "Ground truth and every variant, frame by frame (played together).")
    return out


def make_figures(results: str | Path, config: dict, stream: tuple[str, int] | None = None) -> dict[str, Path]:
    """Everything the `figures` rule flags for Snakemake's report, under <results>/figures and /videos;
    `stream` (scene, seed) is the one shown in the frame strip and the videos."""
    results = Path(results)
    m = metrics.load(results / "metrics.json")
    out = results / "figures"
    segments = figures.read_segments(results / "evaluation" / "segments.csv")
    kinds = {name: m.kind(name) for name in m.generated() + m.baselines()}
    made = {name: figures.drift_curves(segments, m.kid if key == "kid" else key, kinds, out / f"{name}.png",
                                       m.horizon) for key, name in DRIFT.items()}
    made["collapse"] = figures.collapse_strip({v: tables.collapse_points(m, v) for v in m.generated()},
                                              m.horizon, out / "collapse.png")
    scene, seed = _shown_stream(m, stream)
    rows, title = _stream_rows(results, config, m.generated(), scene, seed), f"Stream {streams.stream_id(scene, seed)}"
    made["strips"] = figures.frame_strips(rows, config["rollout"]["strip_frames"], title, out / "strips.png")
    losses = {p.stem.replace("_loss", "").replace("loss_", ""): p
              for p in sorted((results / "plots").glob("*loss*.csv"))}
    if p := figures.loss_curves(losses, out / "losses.png"):
        made["losses"] = p
    steps = config["rollout"]["num_steps"] or config["diffusion"]["num_steps"]
    made["noise_levels"] = figures.noise_levels(config["diffusion"], steps, out / "noise_levels.png")
    made["metrics_table"] = tables.write_csv(m, out / "metrics_table.csv")
    made["metrics_html"] = tables.write_html(m, findings.statements(m), out / "metrics_table.html")
    made.update(_videos(results, config, m.generated(), scene, seed, rows, title))
    return made


# ---- the PDF (`stage report`): one function per section ------------------------------------------------
def _what_was_run(doc: Report, m: Metrics, config: dict) -> None:
    ds = config["dataset"]
    dataset = (f"synthetic nuScenes-format world ({ds['version']}, seed {config['synth']['seed']})"
               if ds["source"] == "synthetic" else f"nuScenes {ds['version']} at {ds['dataroot']}")
    scenes = list(dict.fromkeys(s for s, _ in m.streams))
    seeds = list(dict.fromkeys(seed for _, seed in m.streams))
    doc.heading("What was run")
    doc.bullets([
        f"Dataset: {dataset}; training split `{ds['train_split']}`, held-out long split `{ds['long_split']}`; "
        f"frames {config['extract']['height']}x{config['extract']['width']} from {config['extract']['channel']}.",
        f"Variants: {', '.join(m.generated())}; baselines: {', '.join(m.label(b) for b in m.baselines()) or 'none'}.",
        f"{len(m.streams)} streams per variant ({len(scenes)} held-out scenes x rollout seeds "
        f"{', '.join(map(str, seeds))}), the same for every variant and baseline; {m.horizon} frames per rollout.",
        "Detectors: " + ", ".join(m.families.values()) + (" (substitute networks with fixed random weights, "
                                                          "labelled -proxy everywhere: not comparable with "
                                                          "published numbers)." if _proxy(m) else "."),
        f"Config hash {section_hash(config)}.",
    ])


def _proxy(m: Metrics) -> bool:
    return any(f.endswith("-proxy") for f in m.families.values())


def _read_first(doc: Report, m: Metrics) -> None:
    doc.box("Read this first: the variants against a frozen frame", findings.statements(m),
            warning=findings.loses(m))


def _gates(doc: Report, m: Metrics) -> None:
    if not m.gates:
        return
    doc.heading("Gates: does each variant work at all?")
    measured = [g for g in m.gates if g["met"] is not None]
    doc.paragraph(f"{sum(g['met'] for g in measured)} of {len(measured)} measured gates met. A claim compares two "
                  "variants; a gate asks whether one works: sharp next frames (one-step against persistence and "
                  "the autoencoder ceiling), rollouts that beat a frozen frame in every segment, streams that "
                  "neither collapse nor drift. The targets are the project's acceptance criteria, fixed in "
                  "`evaluate.gates`; where a gate is missed, the claims are tested on a model that does not yet "
                  "work.")
    header, rows = tables.gate_table(m)
    doc.table(header, rows, col_widths=_widths(len(header), (2.6,)))


def _verdicts(doc: Report, m: Metrics) -> None:
    doc.heading("Claims and verdicts")
    if not m.claims:
        doc.paragraph("metrics.json lists no claims (evaluate.claims is empty): nothing was tested.")
        return
    doc.table(tables.VERDICT_HEADER, tables.verdict_rows(m),
              col_widths=_widths(6, (4.0, 2.8, 3.4, 3.0, 1.5)),
              note="Effect and its 95% bootstrap interval as computed by `stage evaluate`; the verdict follows "
                   "the rule in the notes, fixed in the config before any number was seen.")


def _widths(n: int, first_cm: tuple) -> list[float]:
    """Column widths: the first columns as given (cm), the page's rest shared by the others."""
    rest = (PAGE_WIDTH - sum(first_cm) * CM) / max(n - len(first_cm), 1)
    return [w * CM for w in first_cm] + [rest] * (n - len(first_cm))


def _metrics_tables(doc: Report, m: Metrics) -> None:
    doc.heading("Metrics per variant and baseline")
    doc.paragraph("Mean over streams [95% bootstrap interval].")
    for title, window in [("All scored frames", None)] + [(f"Frames {tables.frames_label(*w)}", w)
                                                          for w in m.claim_windows()]:
        doc.heading(title, level=2)
        header, rows = tables.metrics_table(m, window)
        doc.table(header, rows, col_widths=_widths(len(header), (2.6, 2.3, 1.5)))
    doc.heading("Time to collapse", level=2)
    doc.table(*tables.collapse_table(m))
    if m.one_step:
        doc.heading("One-step (teacher-forced) quality", level=2)
        header, rows = tables.one_step_table(m)
        doc.table(header, rows, col_widths=_widths(len(header), (2.6, 1.3, 1.3)),
                  note="Each frame generated from the real previous frame; persistence repeats the real previous "
                       "frame, latent_persistence its autoencoder reconstruction (the same copy through the "
                       "autoencoder every generated frame passes).")


def _training_tables(doc: Report, results: Path) -> None:
    """The autoencoder's held-out PSNR and each training run's loss, first vs last (smoothed)."""
    ae = results / "metrics" / "autoencoder_metrics.json"
    runs = sorted((results / "metrics").glob("train_*_metrics.json"))
    if not (ae.is_file() or runs):
        return
    doc.heading("Training")
    if ae.is_file():
        m = json.loads(ae.read_text())
        doc.table(["autoencoder", "steps", "held-out PSNR, frames (dB)", "held-out PSNR, HD maps (dB)", "seconds"],
                  [["embedded AutoencoderKL", m["steps"], m["psnr_heldout_db"], m["psnr_heldout_hdmap_db"],
                    m["train_seconds"]]])
    rows, idle = [], []
    for m in sorted((json.loads(p.read_text()) for p in runs), key=lambda m: (m["stage"], m.get("variant") or "")):
        name = f"stage {m['stage']}" + (f", {m['variant']}" if m.get("variant") else " (all variants)")
        v = m.get("validation")
        val = ([v["real"]["start"], v["real"]["end"], v["generated"]["start"], v["generated"]["end"]]
               if v else ["-"] * 4)
        if v and not v["learned"]:
            idle.append(name)
        rows.append([name, m["steps"], m["first_loss_smoothed"], m["last_loss_smoothed"], *val, m["train_seconds"]])
    if idle:
        doc.box("Training runs that did not learn", [f"{n}: the held-out validation loss with real condition "
                                                       "frames did not go down over the run." for n in idle],
                warning=True)
    if rows:
        doc.table(["run", "steps", "loss, first", "loss, last", "val. real, start", "val. real, end",
                   "val. gen., start", "val. gen., end", "seconds"], rows,
                  note="Training losses are running means over the first and last steps of each run "
                       "(train.smooth_steps). Validation: the mean loss on held-out windows over a fixed grid of "
                       "noise levels with fixed noise, with real and with the model's own (generated) condition "
                       "frames, at the run's start and end (results/plots/validation_*.csv).")


def _published(doc: Report, m: Metrics) -> None:
    doc.heading("Published numbers (context, not a ranking)")
    doc.table(["model", "FID", "FVD", "source", "protocol"],
              [[n, f"{f:.1f}", f"{v:.1f}", c, p] for n, f, v, c, p in [*PEERS, STAGE_PAPER]],
              col_widths=[2.6 * CM, 1.3 * CM, 1.3 * CM, PAGE_WIDTH - 10.2 * CM, 5.0 * CM],
              note="nuScenes front camera, as published; protocols differ (8 to 25 frames per clip, 150 to 5 369 "
                   "clips). Our numbers use other data and detectors" + (" (proxies)" if _proxy(m) else "") + ".")


def _figures(doc: Report, results: Path, config: dict) -> None:
    doc.page_break()
    doc.heading("Figures")
    strip_frames = ", ".join(str(t) for t in config["rollout"]["strip_frames"])
    for name, caption in CAPTIONS.items():
        if (png := results / "figures" / f"{name}.png").is_file():
            doc.figure(png, caption.format(strip_frames=strip_frames))
    if (sheet := results / "figures" / "contact_sheet.png").is_file():
        doc.figure(sheet, "The training data: frames, and frames with their HD-map and box layouts.")


def _notes(doc: Report, m: Metrics) -> None:
    doc.heading("Notes")
    notes = m.notes
    lines = ["Frame ranges are 0-based and inclusive; frame 0 is the real conditioning frame and is never scored. "
             "Strip and video frame numbers T are 1-based."]
    if _proxy(m):
        lines.append(f"{', '.join(f for f in m.families.values() if f.endswith('-proxy'))}: proxy detectors (fixed "
                     "random-feature networks); they rank our variants and baselines against each other and say "
                     "nothing about published FID/FVD/KID.")
    if isinstance(b := notes.get("bootstrap"), dict):
        level = b.get("level")
        level = f"{level * 100:g}%" if isinstance(level, (int, float)) and level <= 1 else str(level)
        lines.append(f"Intervals: {level} bootstrap, resampling {b.get('unit', 'streams')} "
                     f"({b.get('resamples')} resamples, seed {b.get('seed')}).")
    if isinstance(c := notes.get("collapse"), dict):
        lines.append("Time to collapse: the first frame at which the collapse statistic crosses its threshold; the "
                     f"rollout length ({m.horizon}) where it never does. "
                     + "; ".join(f"{k}: {v}" for k, v in c.items()) + ".")
    if isinstance(rule := notes.get("verdict_rule"), str):
        lines.append(f"Verdict rule: {rule}")
    lines += [f"Note: {n}" for n in notes.get("notes") or [] if isinstance(n, str)]
    doc.bullets(lines)


def _provenance(doc: Report, results: Path, config: dict) -> None:
    doc.page_break()
    doc.heading("Provenance")
    tracked = [results / p for p in ("world", "extracted", "autoencoder", "latents", "checkpoints")
               if (results / p).exists()]
    # paths as dvc.lock writes them (relative to the repository) where the results live inside it
    prov = provenance.collect(REPO_ROOT, config, [str(p.relative_to(REPO_ROOT)) if p.is_relative_to(REPO_ROOT)
                                                   else str(p) for p in tracked], results / "benchmarks")
    doc.bullets([f"git commit {prov['git_commit']}", f"config hash {prov['config_hash']}",
                 f"hardware: {prov['hardware']}; Python {prov['python']}",
                 "packages: " + ", ".join(f"{k} {v}" for k, v in prov["packages"].items())])
    if prov["data"]:
        doc.table(["output", "digest", "from"], [list(r) for r in prov["data"]],
                  col_widths=[4.5 * CM, 7.5 * CM, PAGE_WIDTH - 12 * CM])
    if prov["step_seconds"]:
        total = sum(s for _, s in prov["step_seconds"])
        doc.table(["pipeline step", "wall time (s)"], [[k, v] for k, v in prov["step_seconds"]] + [["sum", total]],
                  col_widths=[PAGE_WIDTH * 0.7, PAGE_WIDTH * 0.3])


def build_report(results: str | Path, config: dict, out: str | Path) -> Path:
    results = Path(results).resolve()
    m = metrics.load(results / "metrics.json")
    doc = Report("STAGE reproduction report")
    doc.paragraph(f"Generated {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC} by `stage report`.")
    _read_first(doc, m)
    _gates(doc, m)
    _verdicts(doc, m)
    _metrics_tables(doc, m)
    _what_was_run(doc, m, config)
    _training_tables(doc, results)
    _published(doc, m)
    _notes(doc, m)
    _figures(doc, results, config)
    _provenance(doc, results, config)
    return doc.write(out)
