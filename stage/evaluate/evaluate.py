"""Score the rollouts of many streams against ground truth, with intervals over streams and verdicts.

    evaluate(rollouts_dir, ground_truth_dir, out_dir, cfg["evaluate"], reconstructions_dir=None,
             progress=True, metrics_path=None, one_step_dir=None) -> the metrics.json dict

writes (docs/metrics-schema.md; stage/schemas/metrics.schema.yaml is checked before anything is written)
    metrics_path (default <out>/metrics.json)
    <out>/segments.csv      per row, segment and metric: mean over streams and bootstrap interval
    <out>/streams.csv       per row, stream, segment and per-stream metric: the value
    <out>/differences.csv   every paired difference between two rows, per range and metric
    <out>/real_stats/       the ground truth's features, reused while protocol and frames match

Rows: every generated variant, and the references on the same streams and frames (baselines.py): ceiling
(with --reconstructions), still_photograph, persistence, real_floor. A stream is (scene, seed); each is
scored on its frames [exclude_first_frames, end), end = where its ground truth ends (or the rollout, or
max_frames). Per stream and range, KID / FID compare its frames with the real frames of the same scene and
indices; PSNR / SSIM are paired; FVD is pooled over streams. Collapse (collapse.py), bootstrap
(bootstrap.py), verdicts (verdicts.py, claims.py) and the one-step runs (one_step.py) build on that table.

Every input is read and checked (streams, rollout protocols, shapes) before anything is written, so bad
input leaves no metrics file.
"""

from __future__ import annotations

import contextlib
import platform
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from stage.config import section_hash
from stage.digest import file_digest
from stage.errors import StageError
from stage.evaluate import (baselines, bootstrap, claims, collapse, drift, gates, kid, one_step, paired, protocol,
                            real_cache, scores, verdicts)
from stage.evaluate.backbones import Backbone, load_backbones
from stage.evaluate.inputs import (Video, check_protocols, check_streams, find_reconstructions, find_rollouts,
                                   run_length)
from stage.evaluate.table import Row, ScoreTable
from stage.formats import metrics
from stage.formats.rollout_folder import stream_id
from stage.formats.scene import open_split
from stage.paths import output_dir, output_file

# The order rows are listed in (and differences taken: a earlier, b later).
REFERENCE_ORDER = ("ceiling", "still_photograph", "persistence", "real_floor")


def _device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


@contextlib.contextmanager
def _one_thread():
    """The table's arithmetic is many small products (40-frame KID kernels, 32-d covariances): on a shared
    2-core box two torch threads make them 10-100x slower (the threads' synchronisation costs more than the
    op); the configured threads are spent as parallel videos instead (`_score_videos`)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _selected(found: dict, scenes, root, flag: str) -> dict:
    if not scenes:
        return found
    keep = set(scenes)
    out = {v: {k: x for k, x in vids.items() if k[0] in keep} for v, vids in found.items()}
    out = {v: x for v, x in out.items() if x}
    if not out:
        raise StageError(f"evaluate.scenes {scenes} selects none of the streams under {root} ({flag})")
    return out


class _Inputs:
    """Everything read and checked before anything is computed or written."""

    def __init__(self, rollouts_dir, ground_truth_dir, reconstructions_dir, one_step_dir, cfg):
        split = {s.name: s for s in open_split(ground_truth_dir)}
        self.order = list(split)
        self.rollouts = _selected(find_rollouts(rollouts_dir, "generated", "--rollouts"), cfg["scenes"],
                                  rollouts_dir, "--rollouts")
        self.streams = check_streams(self.rollouts, rollouts_dir, self.order)
        self.rollout_protocol = check_protocols(self.rollouts)
        self.one, self.one_streams, self.one_protocol = None, [], None
        if one_step_dir is not None:
            self.one = _selected(find_rollouts(one_step_dir, "real", "--one-step"), cfg["scenes"], one_step_dir,
                                 "--one-step")
            self.one_streams = check_streams(self.one, one_step_dir, self.order)
            self.one_protocol = check_protocols(self.one)
        self.gt: dict[str, np.ndarray] = {}
        self.gt_paths: dict[str, Path] = {}
        for found in (self.rollouts, self.one or {}):
            for videos in found.values():
                for video in videos.values():
                    self._check_against_truth(video, split, ground_truth_dir)
        self.scenes = [s for s in self.order if s in self.gt]
        mf = cfg["max_frames"]
        first = cfg["exclude_first_frames"]
        self.ends = {st: self._end(self.rollouts[min(self.rollouts)][st], mf, first) for st in self.streams}
        self.one_ends = {st: self._end(self.one[min(self.one)][st], mf, first) for st in self.one_streams}
        self.scene_end = {s: max(e for st, e in [*self.ends.items(), *self.one_ends.items()] if st[0] == s)
                          for s in self.scenes}
        self.fps = split[self.scenes[0]].meta.get("fps")
        self.recon = None
        if reconstructions_dir is not None:
            self.recon = find_reconstructions(reconstructions_dir, self.scenes)
            for name, video in self.recon.items():
                if video.frames.shape[1:] != self.gt[name].shape[1:]:
                    raise StageError(f"{video.path}: frames are {video.frames.shape[1]}x{video.frames.shape[2]} but "
                                     f"the ground truth is {self.gt[name].shape[1]}x{self.gt[name].shape[2]}; "
                                     "reconstruct at the generation resolution.")
                if len(video.frames) < self.scene_end[name]:
                    raise StageError(f"{video.path}: holds {len(video.frames)} frames but frames up to "
                                     f"{self.scene_end[name]} of {name} are scored; re-run `stage reconstruct` for "
                                     "the whole scene")

    def _check_against_truth(self, video: Video, split, ground_truth_dir) -> None:
        name = video.name
        if name not in split:
            raise StageError(f"{video.path}: scene {name} is not in the ground-truth split {ground_truth_dir} (it has "
                             f"{self.order[:5]}{'...' if len(self.order) > 5 else ''}); pass the extracted split the "
                             "rollouts were made from with --ground-truth.")
        if name not in self.gt:
            self.gt_paths[name] = split[name].array_path("frames")
            self.gt[name] = split[name].frames
        g = self.gt[name].shape
        if video.frames.shape[1:] != g[1:]:
            raise StageError(f"{video.path}: frames are {video.frames.shape[1]}x{video.frames.shape[2]} but the "
                             f"ground truth {self.gt_paths[name]} is {g[1]}x{g[2]}; evaluate rollouts against the "
                             "split extracted at the generation resolution.")

    def _end(self, video: Video, max_frames, first: int) -> int:
        """Scored end of a stream: where its frames, its ground truth or max_frames end."""
        end = min(len(video.frames), len(self.gt[video.name]))
        if video.gt_frames is not None:
            end = min(end, video.gt_frames)
        if max_frames:
            end = min(end, max_frames)
        if end - first < 2:
            raise StageError(f"{video.path}: only frames below {end} have ground truth (or fit max_frames), fewer "
                             f"than 2 after the {first} excluded; score longer rollouts of longer scenes")
        return end


class _Names:
    """Score names and protocol hashes per (metric, range, real floor or not); the protocols themselves."""

    def __init__(self, fid: Backbone, fvd: Backbone, display: dict, size, streams, first, rollout_protocol):
        self.fid, self.fvd, self.display, self.size = fid, fvd, display, list(size)
        ids = [stream_id(*s) for s in streams]      # listed in metrics.json "streams"; hashed here to keep it short
        self.base = {"generation_size": self.size, "exclude_first_frames": first, "n_streams": len(ids),
                     "streams_hash": protocol.protocol_hash({"streams": ids}), "rollout_protocol": rollout_protocol}
        self.protocols: dict[str, dict] = {}

    def _protocol(self, metric: str, rng: drift.Range, floor: bool) -> dict:
        p = {**self.base, "metric": metric, "frames": [rng.lo, rng.hi] if rng.hi else "all scored frames",
             "reference": ("even vs odd real frames of the range" if floor else
                           "real frames of the same scene, same frame indices")}
        if metric in scores.DISTRIBUTION:
            bb = self.fvd if metric == "FVD" else self.fid
            p.update(protocol.detector_protocol(bb), family=self.display[metric])
            if metric == "KID":
                p["kernel"] = kid.describe(self.fid.kid_scale)
            if metric == "FVD":
                p.update(clip_stride=rng.clip_stride, pooled="over streams")
        elif metric in ("PSNR", "SSIM"):
            p.update(paired.describe()[metric.lower()])
        return p

    def get(self, metric: str, rng: drift.Range, floor: bool, n_streams: int, n_clips=None) -> tuple[str, str]:
        p = self._protocol(metric, rng, floor)
        h = protocol.protocol_hash(p)
        self.protocols[h] = p
        frames = protocol.frames_text(rng.lo, rng.hi)
        bb = (self.fvd if metric == "FVD" else self.fid) if metric in scores.DISTRIBUTION else None
        name = protocol.score_name(self.display[metric], frames, n_streams, backbone=bb, size=self.size, n=n_clips,
                                   note="even vs odd real frames" if floor else None)
        return name, h


def _score_videos(videos: dict, progress: bool) -> dict:
    """{key: score()} for `videos` = {key: score}, scored by as many worker threads as torch has threads,
    each with one torch thread: every video's arithmetic is that of a one-thread run, whatever the workers,
    and the detectors' and SSIM's large products release the GIL, so two workers use two cores."""
    workers = max(1, min(torch.get_num_threads(), len(videos)))
    bar = tqdm(total=len(videos), desc="videos", disable=not progress)

    def one(key):
        result = videos[key]()
        bar.update()
        return key, result

    try:
        if workers == 1:
            with _one_thread():
                return dict(map(one, videos))
        # torch's thread count is per OS thread (OpenMP): each worker sets its own
        with ThreadPoolExecutor(workers, initializer=lambda: torch.set_num_threads(1)) as pool:
            return dict(pool.map(one, videos))
    finally:
        bar.close()


def _real_side(out_dir: Path, inp: _Inputs, fid: Backbone, fvd: Backbone, starts: dict, progress: bool):
    """SceneReal per scene, features from the cache in real_stats/ when it fits."""
    digest = file_digest(*(inp.gt_paths[s] for s in inp.scenes))
    size = list(inp.gt[inp.scenes[0]].shape[1:3])
    frames_proto = {**protocol.detector_protocol(fid), "generation_size": size,
                    "frames": {s: [0, inp.scene_end[s]] for s in inp.scenes}}
    clips_proto = {**protocol.detector_protocol(fvd), "generation_size": size,
                   "clip_starts": {s: starts[s] for s in inp.scenes}}
    files, info = {}, {}
    for key, bb, proto in (("fid", fid, frames_proto), ("fvd", fvd, clips_proto)):
        h = protocol.protocol_hash(proto)
        files[key] = out_dir / "real_stats" / f"{bb.family}-{h}.npz"
        info[key] = {"hash": h, "real_frames_digest": digest}
    cached_f = real_cache.load(files["fid"], info["fid"], {f"frames_{i}": (inp.scene_end[s], None)
                                                           for i, s in enumerate(inp.scenes)})
    cached_c = real_cache.load(files["fvd"], info["fvd"], {f"clips_{i}": (len(starts[s]), None)
                                                           for i, s in enumerate(inp.scenes)})
    reals = {}
    for i, s in enumerate(tqdm(inp.scenes, desc="ground truth", disable=not progress, leave=False)):
        if cached_f is not None and cached_c is not None:
            feats, clip_arr = cached_f[f"frames_{i}"], cached_c[f"clips_{i}"]
            pair = (feats, dict(zip(starts[s], clip_arr)))
        else:
            pair = None
        reals[s] = scores.score_real(s, inp.gt[s], inp.scene_end[s], starts[s], fid, fvd, cached=pair)
    if cached_f is None or cached_c is None:
        real_cache.save(files["fid"], {f"frames_{i}": reals[s].feats for i, s in enumerate(inp.scenes)},
                        {**info["fid"], "protocol": frames_proto})
        clip_dim = max((len(v) for r in reals.values() for v in r.clips.values()), default=0)
        real_cache.save(files["fvd"], {f"clips_{i}": np.array([reals[s].clips[t] for t in starts[s]]).reshape(
            len(starts[s]), clip_dim) for i, s in enumerate(inp.scenes)}, {**info["fvd"], "protocol": clips_proto})
    stats = {key: {"path": str(files[key].relative_to(out_dir)), "protocol_hash": info[key]["hash"],
                   "ground_truth_digest": digest} for key in files}
    return reals, stats


def _drift_ratios(table: ScoreTable, row: str, segs: list[drift.Range]) -> list:
    out = []
    for i in range(len(table.streams)):
        vals = [table.values.get((row, g.key, "KID"), np.full(len(table.streams), np.nan))[i] for g in segs]
        vals = [v for v in vals if np.isfinite(v)]
        out.append(drift.drift_ratio(vals[0], vals[-1]) if vals else None)
    return out


def evaluate(rollouts_dir, ground_truth_dir, out_dir, cfg: dict, reconstructions_dir=None,
             progress: bool = True, metrics_path=None, one_step_dir=None) -> dict:
    """Score every variant under rollouts_dir (and the teacher-forced runs under one_step_dir) against the
    extracted split ground_truth_dir; write the outputs (module docstring); return the metrics.json dict.
    `cfg` is the validated `evaluate` config section."""
    t0 = time.perf_counter()
    timings = {}
    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    claim_cfg = claims.check(cfg["claims"])
    inp = _Inputs(rollouts_dir, ground_truth_dir, reconstructions_dir, one_step_dir, cfg)
    fid, fvd = load_backbones(cfg)
    out_dir = output_dir(out_dir)
    metrics_path = output_file(metrics_path, "--metrics") if metrics_path else out_dir / "metrics.json"
    timings["read_inputs"] = time.perf_counter() - t0

    first, L, clip = cfg["exclude_first_frames"], cfg["segment_length"], cfg["fvd_clip_frames"]
    device, streams, ends = cfg["device"], inp.streams, inp.ends
    H = max(ends.values())
    segs = [drift.Range(f"segment {s}-{e}", s, lo, e, cfg["drift_window_stride"])
            for s, e, lo in drift.segments(H, L, first)]
    overall = drift.Range("overall", 0, first, None, cfg["fvd_clip_stride"])
    ranges = [overall, *segs, *claims.ranges(claim_cfg, first, H, cfg["drift_window_stride"])]
    stream_starts = {st: sorted(set().union(*(r.clip_starts(ends[st], clip) for r in ranges))) for st in streams}
    scene_starts = {s: sorted(set().union(set(), *(stream_starts[st] for st in streams if st[0] == s)))
                    for s in inp.scenes}
    # persistence's clip at s is the real clip at s - 1
    gt_starts = {s: sorted(set(v) | {x - 1 for x in v if x >= 1}) for s, v in scene_starts.items()}

    t = time.perf_counter()
    reals, real_stats = _real_side(out_dir, inp, fid, fvd, gt_starts, progress)

    def video(frames, scene, end, starts):
        return partial(scores.score_video, frames, inp.gt[scene], first, end, starts, fid, fvd, device)

    videos = {**{("generated", v, st): video(inp.rollouts[v][st].frames, st[0], ends[st], stream_starts[st])
                 for v in sorted(inp.rollouts) for st in streams},
              **{("one_step", v, st): video(inp.one[v][st].frames, st[0], inp.one_ends[st], [])
                 for v in sorted(inp.one or {}) for st in inp.one_streams},
              **{("ceiling", "ceiling", s): video(inp.recon[s].frames, s, inp.scene_end[s], scene_starts[s])
                 for s in (inp.scenes if inp.recon is not None else [])}}
    if inp.recon is not None:
        one_ends = {s: max(e for st, e in inp.one_ends.items() if st[0] == s) for s, _ in inp.one_streams}
        videos.update({("latent_persistence", "latent_persistence", s): partial(
            baselines.latent_persistence, inp.recon[s].frames, inp.gt[s], first, e, fid, fvd, device)
            for s, e in one_ends.items()})
    scored = _score_videos(videos, progress)
    generated: dict[str, dict] = {v: {} for v in sorted(inp.rollouts)}
    one_videos: dict[str, dict] = {v: {} for v in sorted(inp.one or {})}
    refs: dict[str, dict] = {"still_photograph": {}, "persistence": {}}
    if inp.recon is not None:
        refs["ceiling"] = {}
        if inp.one is not None:
            refs["latent_persistence"] = {}
    into = {"generated": generated, "one_step": one_videos, "ceiling": refs, "latent_persistence": refs}
    for (kind, name, key), result in scored.items():
        into[kind][name][key] = result
    for s in inp.scenes:
        refs["still_photograph"][s] = baselines.still_photograph(reals[s], first, fvd, device)
        refs["persistence"][s] = baselines.persistence(reals[s], first, fvd, device)
    timings["features_and_paired"] = time.perf_counter() - t

    def ref_row(name):
        return Row(name, name, (lambda st, d=refs.get(name): None if d is None else d[st[0]]), per_scene=True,
                   description=baselines.DESCRIPTIONS[name])

    rows = [Row(v, "generated", (lambda st, d=generated[v]: d[st])) for v in sorted(generated)]
    rows += [ref_row(n) for n in REFERENCE_ORDER if n in refs or n == "real_floor"]
    t = time.perf_counter()
    table = ScoreTable(rows, streams, ends, reals, ranges, clip, fid.kid_scale)
    ccfg = cfg["collapse"]
    with _one_thread():
        table.compute(ccfg["window"], ccfg["stride"], first)
    scene_rep = [streams.index(next(st for st in streams if st[0] == s)) for s in inp.scenes if
                 any(st[0] == s for st in streams)]
    ref_windows = {n: np.concatenate([table.windows[n][i][1] for i in scene_rep] or [np.zeros(0)])
                   for n in ("ceiling", "real_floor") if n in table.windows}
    calib = collapse.calibrate(ref_windows.get("ceiling"), ref_windows["real_floor"], ccfg["quantile"], ccfg["factor"])
    threshold = calib["threshold"]
    timings["scores"] = time.perf_counter() - t

    t = time.perf_counter()
    bcfg = cfg["bootstrap"]
    groups = [stream_id(*st) for st in streams] if bcfg["unit"] == "stream" else [st[0] for st in streams]
    with _one_thread():
        table.resample(bootstrap.counts(groups, bcfg["resamples"], bcfg["seed"]), bcfg["level"])
    timings["bootstrap"] = time.perf_counter() - t

    display = {"KID": fid.kid_family, "FID": fid.family, "FVD": fvd.family, "PSNR": "PSNR", "SSIM": "SSIM",
               "temporal_mad_ratio": "temporal_mad_ratio"}
    names = _Names(fid, fvd, display, inp.gt[inp.scenes[0]].shape[1:3], streams, first, inp.rollout_protocol)
    variants, survival, segment_rows, stream_rows = {}, {}, [], []
    for row in rows:
        layouts = ({st: run_length(inp.rollouts[row.name][st].layout[first:ends[st]]) for st in streams}
                   if row.kind == "generated" else None)
        variants[row.name], survival[row.name] = _row_entry(row, table, names, segs, overall, threshold,
                                                            ccfg["min_bad_windows"], layouts, segment_rows, stream_rows)
    order = [r.name for r in rows]
    difference_rows = _differences(table, order, ranges, display)
    claim_entries, skipped = claims.assess(claim_cfg, table, set(order), display, survival, H,
                                           cfg["verdict"]["survival_share"], bcfg["level"])

    one = {}
    if inp.one is not None:
        one_refs = {n: ref_row(n) for n in metrics.ONE_STEP_REFERENCES if n in refs}
        with _one_thread():
            one = one_step.assess(one_videos, inp.one_streams, inp.one_ends, reals, one_refs, first, fid.kid_scale,
                                  display, bcfg, [stream_id(*st) if bcfg["unit"] == "stream" else st[0]
                                                  for st in inp.one_streams])

    notes = [
        f"{fid.family} / {fid.kid_family} / {fvd.family}: " + (
            "proxy detectors (fixed random-feature nets, see stage/evaluate/backbones.py); not comparable with "
            "published FID/KID/FVD" if fid.is_proxy or fvd.is_proxy else "real detectors"),
        f"frames < {first} (conditioning) are excluded from every score; segment ends are exclusive",
        "per stream and range, KID / FID compare the stream's frames with the real frames of the same scene and "
        f"frame indices; {fvd.family} is pooled over streams (a few clips per stream are too few)",
        f"intervals: {bcfg['resamples']} bootstrap resamples of whole {bcfg['unit']}s, percentile, level "
        f"{bcfg['level']}" + ("; the seeds of one scene share its content, so stream-level intervals understate "
                              "scene-to-scene variation" if bcfg["unit"] == "stream" else ""),
    ]
    short = sorted({stream_id(*st) for st in streams if ends[st] < len(inp.rollouts[min(inp.rollouts)][st].frames)})
    if short:
        notes.append(f"{len(short)} streams are longer than their ground truth (e.g. {short[0]}); frames without "
                     "ground truth are not scored")
    if inp.recon is None:
        notes.append("ceiling row omitted: no --reconstructions; the collapse threshold uses the real floor only")
    if inp.one is None:
        notes.append("one_step empty: no --one-step (teacher-forced runs)")
    if skipped:
        notes.append(f"{len(skipped)} claim comparisons could not be assessed (claims_skipped)")
    outputs_paths = {"segments_csv": out_dir / "segments.csv", "streams_csv": out_dir / "streams.csv",
                     "differences_csv": out_dir / "differences.csv"}
    timings["total_before_write"] = time.perf_counter() - t0
    result = {
        "format_version": metrics.FORMAT_VERSION,
        "families": {"fid": fid.family, "fvd": fvd.family, "kid": fid.kid_family},
        "detectors": {"fid": fid.describe(), "fvd": fvd.describe(), "kid": {**fid.describe(),
                                                                             "kernel": kid.describe(fid.kid_scale)}},
        "device": _device_name(device),
        "inputs": {"rollouts": str(rollouts_dir), "ground_truth": str(ground_truth_dir),
                   "reconstructions": None if reconstructions_dir is None else str(reconstructions_dir),
                   "one_step": None if one_step_dir is None else str(one_step_dir)},
        "streams": [{"scene": s, "seed": seed} for s, seed in streams],
        "segments": [[g.start, g.hi] for g in segs],
        "horizon": H,
        "exclude_first_frames": first,
        "segment_length": L,
        "scenes": inp.scenes,
        "rollout_protocol": inp.rollout_protocol,
        "one_step_protocol": inp.one_protocol,
        "variants": variants,
        "one_step": one,
        "claims": claim_entries,
        "claims_skipped": skipped,
        "gates": gates.assess(variants, one, H, fid.kid_family, cfg["gates"]),
        "verdict_rule": verdicts.rule_text(bcfg["level"], cfg["verdict"]["survival_share"], bcfg["resamples"],
                                           bcfg["unit"]),
        "bootstrap": {"resamples": bcfg["resamples"], "seed": bcfg["seed"], "level": bcfg["level"],
                      "unit": bcfg["unit"], "method": bootstrap.METHOD},
        "collapse": {"statistic": f"{fid.kid_family} of each window's frames vs the same window's real frames "
                                  "(same scene)", "window": ccfg["window"], "stride": ccfg["stride"],
                     "min_bad_windows": ccfg["min_bad_windows"], "threshold": threshold,
                     "calibration": {"rule": "threshold = factor x max(quantile of the ceiling's window statistics, "
                                             "quantile of the absolute real-floor window statistics), over every "
                                             "window of every scene",
                                     **{k: v for k, v in calib.items() if k != "threshold"}}},
        "real_statistics": real_stats,
        "outputs": {k: str(p) for k, p in outputs_paths.items()},
        "protocols": names.protocols,
        "config": cfg,
        "config_hash": section_hash(cfg),
        "notes": notes,
        "timings": {k: round(v, 2) for k, v in timings.items()},
        "seconds": round(time.perf_counter() - t0, 2),
    }
    tables = {outputs_paths["segments_csv"]: (metrics.SEGMENT_COLUMNS, segment_rows),
              outputs_paths["streams_csv"]: (metrics.STREAM_COLUMNS, stream_rows),
              outputs_paths["differences_csv"]: (metrics.DIFFERENCE_COLUMNS, difference_rows)}
    return metrics.write(result, metrics_path, tables)


def _clips(table: ScoreTable, row: str, key: str) -> int | None:
    s = table.stats.get((row, key, "FVD"))
    return None if s is None else s.n_clips


def _row_entry(row: Row, table: ScoreTable, names: _Names, segs: list, overall: drift.Range, threshold: float,
               min_bad_windows: int, layouts: dict | None, segment_rows: list, stream_rows: list):
    """(metrics.json "variants" entry, survival counts) of one row; appends its segments.csv / streams.csv rows."""
    streams, ends, display = table.streams, table.ends, names.display
    floor = row.kind == "real_floor"
    ttc = [collapse.time_to_collapse(stats, starts, threshold, min_bad_windows, ends[st])
           for st, (starts, stats) in zip(streams, table.windows[row.name])]
    survival = {"surviving": sum(not c for _, c in ttc), "n": len(streams), "scored_to": min(ends.values())}
    entry = {"kind": row.kind, **({"description": row.description} if row.description else {}),
             "streams": len(streams), "time_to_collapse": [x for x, _ in ttc], "collapsed": [c for _, c in ttc],
             "scored_frames": [ends[st] for st in streams], "drift_ratio": _drift_ratios(table, row.name, segs),
             "segments": {}, "overall": {}, "names": {}}
    for m in table.metrics(row.name, "overall"):
        s = table.summary(row.name, "overall", m)
        entry["overall"][display[m]] = s
        n_clips = _clips(table, row.name, "overall") if m == "FVD" else None
        entry["names"][display[m]] = names.get(m, overall, floor, s["n_streams"], n_clips)[0]
    for m in dict.fromkeys(m for g in segs for m in table.metrics(row.name, g.key)):
        entry["segments"][display[m]] = []
        for g in segs:
            s = table.summary(row.name, g.key, m) or {"mean": None, "ci_low": None, "ci_high": None, "n_streams": 0}
            entry["segments"][display[m]].append({"start": g.start, "end": g.hi, **s})
            if s["mean"] is None:
                continue
            name, h = names.get(m, g, floor, s["n_streams"], _clips(table, row.name, g.key) if m == "FVD" else None)
            segment_rows.append({"variant": row.name, "segment_start": g.start, "segment_end": g.hi,
                                 "metric": display[m], **s, "name": name, "protocol_hash": h})
            if m in scores.PER_STREAM:
                vals = table.values[(row.name, g.key, m)]
                stream_rows += [{"variant": row.name, "scene": st[0], "seed": st[1], "segment_start": g.start,
                                 "segment_end": g.hi, "metric": display[m], "value": vals[i]}
                                for i, st in enumerate(streams) if np.isfinite(vals[i])]
    if layouts is not None:
        entry["layout_source"] = {stream_id(*st): runs for st, runs in layouts.items()}
    return entry, survival


def _differences(table: ScoreTable, order: list[str], ranges: list, display: dict) -> list[dict]:
    """differences.csv: the paired a - b of every pair of rows (a listed first), range and metric."""
    out = []
    for i, a in enumerate(order):
        for b in order[i + 1:]:
            for g in ranges:
                for m in dict.fromkeys(table.metrics(a, g.key)):
                    d = table.difference(a, b, g.key, m)
                    if d is not None:
                        out.append({"a": a, "b": b, "range": g.key, "segment_start": g.start if g.hi else g.lo,
                                    "segment_end": g.hi, "metric": display[m], "better": verdicts.better(m), **d})
    return out
