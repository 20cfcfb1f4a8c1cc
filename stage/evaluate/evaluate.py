"""Score rollouts against ground truth: variants x scenes -> metrics.json + segments.csv.

    evaluate(rollouts_dir, ground_truth_dir, out_dir, cfg["evaluate"], reconstructions_dir=None)

writes
    <out>/metrics.json      rows (each variant, noise_floor, ceiling) x metrics, names, protocol hashes
    <out>/segments.csv      variant, segment_start, segment_end, metric, value, n, name, protocol_hash
    <out>/real_stats/<family>-<real protocol hash>.npz   mean / covariance (float64) of the real features
                            (all, subset_a, subset_b), keyed on the protocol hash and the digest of the
                            ground-truth frames.npy files; reused only while both match (checked on every
                            read), recomputed (with one printed line) when stale or damaged

Rows:
- one per variant: FID(-proxy) of all scored frames and FVD(-proxy) of clips at stride
  fvd_clip_stride, both against the pooled ground truth of the evaluated scenes; PSNR / SSIM where the
  rollout has ground truth (frames < min(gt_frames, len(ground truth))); temporal consistency;
- noise_floor: real vs real, the ground truth split into two disjoint subsets of alternating blocks of
  segment_length frames (each subset has about half the frames, so its FID bias is that of N/2);
- ceiling: ground truth encoded + decoded by our autoencoder (--reconstructions), scored like a variant;
  omitted, with a note, when no reconstructions are given.
The first exclude_first_frames frames (frame 0: the real conditioning frame) are never scored, in any row.
"""

from __future__ import annotations

import csv
import io
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from stage.atomic import write_text
from stage.config import section_hash
from stage.data.scene_format import open_split
from stage.digest import file_digest
from stage.errors import StageError
from stage.evaluate import drift, frechet, paired, protocol, temporal
from stage.evaluate.backbones import Backbone, load_backbones
from stage.evaluate.inputs import Video, find_reconstructions, find_rollouts, load_frames, run_length
from stage.paths import output_dir, output_file
from stage.readback import read_json

FORMAT_VERSION = 1
SEGMENT_COLUMNS = ("variant", "segment_start", "segment_end", "metric", "value", "n", "name", "protocol_hash")
RERUN_EXTRACT = "re-run `stage extract` for the ground-truth split"
RECOMPUTE = "recomputing the real statistics"


def _device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


class _Evaluation:
    """State of one evaluation run: config, detectors, ground truth, real statistics, outputs."""

    def __init__(self, cfg: dict, fid: Backbone, fvd: Backbone, gt: dict[str, Video], scenes: list[str],
                 horizon: int, fps, progress: bool):
        self.cfg, self.fid, self.fvd, self.gt, self.scenes = cfg, fid, fvd, gt, scenes
        self.horizon, self.fps, self.progress = horizon, fps, progress
        self.first = cfg["exclude_first_frames"]
        self.L = cfg["segment_length"]
        self.clip = cfg["fvd_clip_frames"]
        self.device = _device_name(cfg["device"])
        self.protocols: dict[str, dict] = {}
        self.segment_rows: list[dict] = []
        self.notes: list[str] = []

    # ---- bookkeeping ---------------------------------------------------------------------------
    def _entry(self, name: str, family: str, value, n: int, proto: dict, **extra) -> dict:
        h = protocol.protocol_hash(proto)
        self.protocols[h] = proto
        return {"name": name, "family": family, "value": None if value is None else float(value), "n": int(n),
                "protocol_hash": h, "device": self.device, **extra}

    def _segment(self, variant, seg, metric, entry):
        self.segment_rows.append({"variant": variant, "segment_start": seg[0], "segment_end": seg[1],
                                  "metric": metric, "value": entry["value"], "n": entry["n"], "name": entry["name"],
                                  "protocol_hash": entry["protocol_hash"]})

    # ---- features ------------------------------------------------------------------------------
    def score_video(self, frames: np.ndarray, end: int, clip_starts: set[int]) -> drift.SceneScores:
        """Frame features of [first, end), clip features at `clip_starts`."""
        idx = np.arange(self.first, end)
        prepared = self.fid.prepare(frames[:end])
        feats = self.fid.frame_features(prepared, idx)
        scores = drift.SceneScores(idx, feats)
        starts = sorted(clip_starts)
        if starts:
            if (self.fvd.input_size, self.fvd.resize_rule) != (self.fid.input_size, self.fid.resize_rule):
                prepared = self.fvd.prepare(frames[:end])
            scores.clip_feats = dict(zip(starts, self.fvd.clip_features(prepared, starts)))
        return scores

    def overall_starts(self, end: int) -> list[int]:
        return drift.clip_starts(self.first, end, self.clip, self.cfg["fvd_clip_stride"])

    def window_starts(self, end: int) -> dict[tuple, list[int]]:
        segs = drift.segments(end, self.L, self.first)
        return {(s, e): drift.clip_starts(f, e, self.clip, self.cfg["drift_window_stride"]) for s, e, f in segs}

    # ---- real statistics -----------------------------------------------------------------------
    def real_side(self, out_dir: Path):
        """Ground-truth scores per scene and the pooled real statistics (cached per protocol hash and
        ground-truth digest)."""
        self.gt_scores, self.real_end = {}, {}
        for name in tqdm(self.scenes, desc="ground truth", disable=not self.progress, leave=False):
            frames = self.gt[name].frames
            end = min(len(frames), self.horizon)
            self.real_end[name] = end
            starts = set(self.overall_starts(end))
            for ws in self.window_starts(end).values():
                starts |= set(ws)
            sc = self.score_video(frames, end, starts)
            sc.mad_index = np.arange(self.first, end - 1)
            sc.mad = temporal.consecutive_mad(frames, self.first, end)
            self.gt_scores[name] = sc
        size = list(self.gt[self.scenes[0]].frames.shape[1:3])
        selection = {"scenes": self.scenes, "frame_ranges": {s: [self.first, self.real_end[s]] for s in self.scenes},
                     "noise_floor_split": f"alternating blocks of {self.L} frames"}
        self.real, self.real_protocol, self.real_paths = {}, {}, {}
        self.real_digest = file_digest(*(self.gt[s].path for s in self.scenes))
        output_dir(out_dir / "real_stats")
        for key, bb in (("fid", self.fid), ("fvd", self.fvd)):
            sel = dict(selection, stride=1 if key == "fid" else self.cfg["fvd_clip_stride"],
                       start_offset=self.first)
            proto = {**protocol.detector_protocol(bb), "source": "ground truth", "generation_size": size,
                     "fps": self.fps, "clip_selection": sel, "exclude_first_frames": self.first}
            all_f, a, b = [], [], []
            for s in self.scenes:
                sc = self.gt_scores[s]
                if key == "fid":
                    feats, pos = sc.frame_feats, sc.frame_index
                else:
                    pos = np.array(self.overall_starts(self.real_end[s]), dtype=int)
                    feats = sc.clips(list(pos))
                if len(pos):
                    all_f.append(feats)
                    in_a = (pos // self.L) % 2 == 0
                    a.append(feats[in_a])
                    b.append(feats[~in_a])
            pooled = [np.concatenate(x) if x else np.zeros((0, 0)) for x in (all_f, a, b)]
            proto["n_clips"] = {"all": len(pooled[0]), "subset_a": len(pooled[1]), "subset_b": len(pooled[2])}
            h = protocol.protocol_hash(proto)
            path = out_dir / "real_stats" / f"{bb.family}-{h}.npz"
            stats = self._cached_stats(path, h, pooled[0])
            if stats is None:
                if len(pooled[0]) < 2:
                    raise StageError(f"only {len(pooled[0])} real {'frames' if key == 'fid' else 'clips'} to fit "
                                     f"{bb.family} statistics: the ground truth is too short for this protocol "
                                     "(fvd_clip_frames, exclude_first_frames); use longer scenes or shorter clips")
                stats = {k: frechet.fit(x) for k, x in zip(("all", "subset_a", "subset_b"), pooled) if len(x) >= 2}
                frechet.save_stats(path, stats, {**proto, "hash": h, "real_frames_digest": self.real_digest})
            self.real[key], self.real_protocol[key], self.real_paths[key] = stats, proto, path

    def _cached_stats(self, path: Path, proto_hash: str, features: np.ndarray):
        """The statistics in `path` if they were computed under this protocol from these ground-truth frames
        (and fit `features`); None, said why in one printed line, when they must be recomputed."""
        if not path.is_file():
            return None
        try:
            stats, info = frechet.load_stats(path, RECOMPUTE)
        except StageError as exc:
            print(exc)
            return None
        stale = [f"{k} {info.get(k)!r}, now {v!r}" for k, v in (("hash", proto_hash),
                                                                ("real_frames_digest", self.real_digest))
                 if info.get(k) != v]
        dims = features.shape[1] if features.ndim == 2 else None
        if not stale and (stats["all"].mu.shape[0] != dims or stats["all"].n != len(features)):
            stale = [f"{stats['all'].n} samples of dimension {stats['all'].mu.shape[0]}, now {len(features)} of {dims}"]
        if stale:
            print(f"{path}: computed from other ground truth or under another protocol ({'; '.join(stale)}); "
                  f"{RECOMPUTE}")
            return None
        return stats

    # ---- rows ----------------------------------------------------------------------------------
    def _fd(self, key: str, feats: np.ndarray):
        if len(feats) < 2:
            return None
        return frechet.distance(frechet.fit(feats), self.real[key]["all"])

    def score_row(self, variant: str, videos: dict[str, Video], layout_note=None) -> dict:
        """Metrics of one generated (or reconstructed) row; appends its per-segment rows."""
        per_scene: dict[str, drift.SceneScores] = {}
        layout: dict[str, list] = {}
        for name, video in tqdm(videos.items(), desc=variant, disable=not self.progress, leave=False):
            frames = video.frames
            end = min(len(frames), self.horizon)
            starts = set(self.overall_starts(end))
            for ws in self.window_starts(end).values():
                starts |= set(ws)
            sc = self.score_video(frames, end, starts)
            gt_frames = self.gt[name].frames
            g_end = min(end, len(gt_frames), video.gt_frames if video.gt_frames is not None else len(gt_frames))
            if g_end > self.first:
                sc.paired_index = np.arange(self.first, g_end)
                sc.psnr = paired.psnr(frames[self.first:g_end], gt_frames[self.first:g_end])
                sc.ssim = paired.ssim(frames[self.first:g_end], gt_frames[self.first:g_end])
            sc.mad_index = np.arange(self.first, max(end - 1, self.first))
            sc.mad = temporal.consecutive_mad(frames, self.first, end)
            sc.tpsnr = temporal.consecutive_psnr(frames, self.first, end)
            sc.mad_gt_index = np.arange(self.first, max(g_end - 1, self.first))
            sc.mad_gt = temporal.consecutive_mad(gt_frames, self.first, g_end)
            per_scene[name] = sc
            layout[name] = run_length(video.layout[self.first:end]) if video.layout else layout_note
        scenes = list(videos)
        size = list(next(iter(videos.values())).frames.shape[1:3])
        ends = {s: min(len(videos[s].frames), self.horizon) for s in scenes}
        base = {"generation_size": size, "fps": self.fps, "exclude_first_frames": self.first,
                "layout_source": layout}

        def unpaired(key, bb, seg=None):
            if key == "fid":
                feats = [per_scene[s].frames_in(*((seg[2], seg[1]) if seg else (self.first, ends[s]))) for s in scenes]
                starts = None
            else:
                starts = {s: (self.window_starts(ends[s]).get(seg[:2], []) if seg else self.overall_starts(ends[s]))
                          for s in scenes}
                feats = [per_scene[s].clips(starts[s]) for s in scenes if starts[s]]
            feats = np.concatenate(feats) if feats else np.zeros((0, 0))
            stride = 1 if key == "fid" else self.cfg["drift_window_stride" if seg else "fvd_clip_stride"]
            sel = {"scenes": scenes, "frame_ranges": {s: list(seg[2:] if seg else (self.first, ends[s]))
                                                      for s in scenes},
                   "stride": stride, "start_offset": seg[2] if seg else self.first}
            proto = protocol.unpaired_protocol(bb, generation_size=size, fps=self.fps, selection=sel, n=len(feats),
                                               real=self.real_protocol[key], exclude_first_frames=self.first,
                                               layout_source=layout)
            frames = (seg[2], seg[1] - 1) if seg else None
            return self._entry(protocol.metric_name(bb, len(feats), frames), bb.family, self._fd(key, feats),
                               len(feats), proto, n_real=self.real[key]["all"].n)

        def paired_entries(seg=None):
            lo, hi = (seg[2], seg[1]) if seg else (self.first, self.horizon)
            ps = [per_scene[s].paired_in(lo, hi) for s in scenes]
            p = np.concatenate([x[0] for x in ps]) if ps else np.zeros(0)
            q = np.concatenate([x[1] for x in ps]) if ps else np.zeros(0)
            tr = [per_scene[s].transitions_in(lo, hi) for s in scenes]
            mad, tps = np.concatenate([t[0] for t in tr]), np.concatenate([t[1] for t in tr])
            mad_gt = np.concatenate([t[2] for t in tr])
            # generated MAD on exactly the transitions that have ground truth, for the ratio
            mad_same = np.concatenate([per_scene[s].mad[np.isin(per_scene[s].mad_index,
                                                                per_scene[s].mad_gt_index[
                                                                    (per_scene[s].mad_gt_index >= lo)
                                                                    & (per_scene[s].mad_gt_index + 1 < hi)])]
                                       for s in scenes])
            frames = (lo, hi - 1) if seg else None
            proto = {**base, "frame_range": [lo, hi], "scenes": scenes,
                     "paired_frames": "frames < min(gt_frames, len(ground truth))", "psnr_cap_db": paired.PSNR_CAP_DB,
                     "ssim": [paired.SSIM_WINDOW, paired.SSIM_SIGMA, paired.SSIM_K1, paired.SSIM_K2]}
            out = {}
            for key, vals, extra in (("PSNR", p, {}), ("SSIM", q, {}), ("temporal_mad", mad, {}),
                                     ("temporal_psnr", tps, {}), ("temporal_mad_gt", mad_gt, {})):
                out[key] = self._entry(protocol.paired_name(key, size, len(vals), frames), key,
                                       vals.mean() if len(vals) else None, len(vals), {**proto, "metric": key}, **extra)
            ratio = mad_same.mean() / mad_gt.mean() if len(mad_gt) and mad_gt.mean() > 0 else None
            out["temporal_mad_ratio"] = self._entry(
                protocol.paired_name("temporal_mad_ratio", size, len(mad_gt), frames), "temporal_mad_ratio",
                ratio, len(mad_gt), {**proto, "metric": "temporal_mad_ratio"})
            return out

        metrics = {self.fid.family: unpaired("fid", self.fid), self.fvd.family: unpaired("fvd", self.fvd),
                   **paired_entries()}
        for seg in drift.segments(max(ends.values()), self.L, self.first):
            self._segment(variant, seg, self.fid.family, unpaired("fid", self.fid, seg))
            if any(self.window_starts(ends[s]).get(seg[:2]) for s in scenes):
                self._segment(variant, seg, self.fvd.family, unpaired("fvd", self.fvd, seg))
            for key, entry in paired_entries(seg).items():
                if entry["value"] is not None:
                    self._segment(variant, seg, key, entry)
        return {"kind": "generated", "scenes": scenes, "n_frames": ends, "layout_source": layout, "metrics": metrics}

    def noise_floor_row(self) -> dict:
        metrics = {}
        for key, bb in (("fid", self.fid), ("fvd", self.fvd)):
            st = self.real[key]
            if "subset_a" not in st or "subset_b" not in st:
                self.notes.append(f"noise floor {bb.family}: fewer than 2 samples in a subset; omitted")
                continue
            n = min(st["subset_a"].n, st["subset_b"].n)
            proto = {"noise_floor": protocol.protocol_hash(self.real_protocol[key]),
                     **protocol.detector_protocol(bb), "subsets": [st["subset_a"].n, st["subset_b"].n]}
            name = protocol.metric_name(bb, n).replace("]", ", real vs real]")
            metrics[bb.family] = self._entry(name, bb.family, frechet.distance(st["subset_a"], st["subset_b"]), n,
                                             proto, n_real=st["subset_b"].n, n_a=st["subset_a"].n)
        return {"kind": "noise_floor", "scenes": self.scenes,
                "description": f"ground truth vs ground truth: alternating blocks of {self.L} frames "
                               "(subset_a: even blocks, subset_b: odd blocks)", "metrics": metrics}

    def ground_truth_segments(self) -> None:
        """Reference rows for the drift plot: each ground-truth segment against the pooled real stats
        (which contain it, so this is the small-N floor of the segment scores)."""
        for seg in drift.segments(max(self.real_end.values()), self.L, self.first):
            feats = np.concatenate([self.gt_scores[s].frames_in(seg[2], seg[1]) for s in self.scenes])
            proto = {"ground_truth_segment": list(seg), "real": protocol.protocol_hash(self.real_protocol["fid"]),
                     **protocol.detector_protocol(self.fid)}
            self._segment("ground_truth", seg, self.fid.family,
                          self._entry(protocol.metric_name(self.fid, len(feats), (seg[2], seg[1] - 1)),
                                      self.fid.family, self._fd("fid", feats), len(feats), proto))
            clips = [self.gt_scores[s].clips(self.window_starts(self.real_end[s]).get(seg[:2], []))
                     for s in self.scenes]
            clips = [c for c in clips if len(c)]
            if clips:
                feats = np.concatenate(clips)
                proto = {**proto, **protocol.detector_protocol(self.fvd), "real": protocol.protocol_hash(
                    self.real_protocol["fvd"]), "stride": self.cfg["drift_window_stride"]}
                self._segment("ground_truth", seg, self.fvd.family,
                              self._entry(protocol.metric_name(self.fvd, len(feats), (seg[2], seg[1] - 1)),
                                          self.fvd.family, self._fd("fvd", feats), len(feats), proto))


def evaluate(rollouts_dir, ground_truth_dir, out_dir, cfg: dict, reconstructions_dir=None,
             progress: bool = True, metrics_path=None) -> dict:
    """Score every variant under rollouts_dir against the extracted split ground_truth_dir; write
    metrics_path (default <out_dir>/metrics.json), <out_dir>/segments.csv and real_stats/; return the
    metrics.json dict. `cfg` is the validated `evaluate` config section."""
    t0 = time.perf_counter()
    out_dir = output_dir(out_dir)
    if metrics_path:
        metrics_path = output_file(metrics_path, "--metrics")
    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    rollouts = find_rollouts(rollouts_dir)
    split = {s.name: s for s in open_split(ground_truth_dir)}
    order = list(split)
    gt: dict[str, Video] = {}
    for variant, videos in rollouts.items():
        for name, video in videos.items():
            if name not in split:
                raise StageError(f"{video.path}: scene {name} is not in the ground-truth split {ground_truth_dir} "
                                 f"(it has {order[:5]}{'...' if len(order) > 5 else ''}); pass the extracted split "
                                 "the rollouts were made from with --ground-truth.")
            if name not in gt:
                path = split[name].path / "frames.npy"
                gt[name] = Video(name, path, load_frames(path, RERUN_EXTRACT), None, [])
            gshape = gt[name].frames.shape[1:]
            if video.frames.shape[1:] != gshape:
                raise StageError(f"{video.path}: frames are {video.frames.shape[1]}x{video.frames.shape[2]} but the "
                                 f"ground truth {gt[name].path} is {gshape[0]}x{gshape[1]}; "
                                 "evaluate rollouts against the split extracted at the generation resolution.")
    if cfg["scenes"]:
        keep = set(cfg["scenes"])
        rollouts = {v: {s: x for s, x in vids.items() if s in keep} for v, vids in rollouts.items()}
        rollouts = {v: vids for v, vids in rollouts.items() if vids}
        if not rollouts:
            raise StageError(f"evaluate.scenes {cfg['scenes']} selects none of the rollouts under {rollouts_dir}")
    scenes = [s for s in order if any(s in vids for vids in rollouts.values())]
    longest = max(len(x.frames) for vids in rollouts.values() for x in vids.values())
    horizon = min(longest, cfg["max_frames"]) if cfg["max_frames"] else longest
    fps = read_json(split[scenes[0]].path / "meta.json", RERUN_EXTRACT).get("fps")
    fid, fvd = load_backbones(cfg)
    ev = _Evaluation(cfg, fid, fvd, gt, scenes, horizon, fps, progress)
    ev.real_side(out_dir)

    rows = {}
    scene_sets = {v: sorted(vids) for v, vids in rollouts.items()}
    if len({tuple(s) for s in scene_sets.values()}) > 1:
        ev.notes.append(f"variants cover different scenes {scene_sets}: compare rows with care")
    for variant in tqdm(sorted(rollouts), desc="variants", disable=not progress):
        rows[variant] = ev.score_row(variant, rollouts[variant])
    rows["noise_floor"] = ev.noise_floor_row()
    if reconstructions_dir:
        recon = find_reconstructions(reconstructions_dir, scenes)
        for name, video in recon.items():
            if video.frames.shape[1:] != gt[name].frames.shape[1:]:
                raise StageError(f"{video.path}: frames are {video.frames.shape[1:3]} but the ground truth is "
                                 f"{gt[name].frames.shape[1:3]}; reconstruct at the generation resolution.")
            if len(video.frames) < min(len(gt[name].frames), horizon):
                ev.notes.append(f"ceiling: {video.path} has {len(video.frames)} frames, fewer than evaluated")
        rows["ceiling"] = ev.score_row("ceiling", recon, layout_note="none (autoencoder reconstruction)")
        rows["ceiling"]["kind"] = "ceiling"
    else:
        ev.notes.append("ceiling row omitted: no --reconstructions (ground truth encoded + decoded by the autoencoder)")
    ev.ground_truth_segments()

    ev.notes += [
        f"{fid.family} / {fvd.family}: " + ("proxy detectors (fixed random-feature nets, see "
                                            "stage/evaluate/backbones.py); not comparable with published FID/FVD"
                                            if fid.is_proxy or fvd.is_proxy else "TorchScript detectors"),
        "drift: past the end of the recorded scene there is no paired ground truth; per-segment "
        f"{fid.family} / {fvd.family} are unpaired (against one pooled real distribution), PSNR / SSIM only "
        "where ground truth exists",
        f"frames < {ev.first} (conditioning) are excluded from every score; segment_end is exclusive",
        "single run per variant: no mean / std over seeds",
    ]
    result = {
        "format_version": FORMAT_VERSION,
        "families": {"fid": fid.family, "fvd": fvd.family},
        "detectors": {"fid": fid.describe(), "fvd": fvd.describe()},
        "device": ev.device,
        "inputs": {"rollouts": str(rollouts_dir), "ground_truth": str(ground_truth_dir),
                   "reconstructions": None if reconstructions_dir is None else str(reconstructions_dir)},
        "scenes": scenes,
        "horizon": horizon,
        "exclude_first_frames": ev.first,
        "segment_length": ev.L,
        "real_statistics": {k: {"path": str(ev.real_paths[k].relative_to(out_dir)),
                                "protocol_hash": protocol.protocol_hash(ev.real_protocol[k]),
                                "ground_truth_digest": ev.real_digest, "n": ev.real[k]["all"].n}
                            for k in ("fid", "fvd")},
        "config": cfg,
        "config_hash": section_hash(cfg),
        "rows": rows,
        "protocols": ev.protocols,
        "notes": ev.notes,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    write_text(Path(metrics_path) if metrics_path else out_dir / "metrics.json",
               json.dumps(result, indent=1, default=_json_default))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=SEGMENT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(ev.segment_rows)
    write_text(out_dir / "segments.csv", buf.getvalue())
    return result


def _json_default(x):
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")
