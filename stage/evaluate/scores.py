"""What is computed once per video and reused by every score: frame features, clip features, per-frame
paired metrics, consecutive-frame differences; and the per-stream scores of a frame range from them.

Every frame goes through each detector once (score_video / score_real): a segment's score, the whole
video's, a claim's frames, the collapse windows and every bootstrap resample only select rows of these
arrays, indexed by absolute frame number.

Per-stream metrics of a range [lo, hi) (range_scores), all against the real frames of the same scene and
the same frame indices:
    PSNR, SSIM            mean of the per-frame values
    KID                   unbiased KID(-proxy) of the hi - lo generated vs the hi - lo real frame features
    FID                   Frechet distance of Gaussians fitted to the same two sets (biased in N: compare
                          ranges of equal length only)
    temporal_mad_ratio    mean |frame t+1 - frame t| of the video over the same mean of the ground truth
                          (transitions inside the range; 1 = real-like motion, 0 = frozen, > 1 flicker)
FVD is pooled over streams (clip_sets feed bootstrap.pooled_frechet_resamples).
The real floor (floor_range_scores) compares the range's even real frames with its odd real frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from stage.evaluate import frechet, paired, temporal
from stage.evaluate.backbones import Backbone
from stage.evaluate.kid import kid

PER_STREAM = ("PSNR", "SSIM", "KID", "FID", "temporal_mad_ratio")
POOLED = ("FVD",)
DISTRIBUTION = ("KID", "FID", "FVD")


@dataclass
class SceneReal:
    """Ground truth of one scene: features of frames [0, end), clip features at the starts any score needs."""

    name: str
    frames: np.ndarray          # uint8 (T, H, W, 3), memory-mapped
    end: int
    feats: np.ndarray           # (end, D)
    clips: dict[int, np.ndarray]
    mad: np.ndarray             # (end - 1,): transition t -> t + 1


@dataclass
class VideoScores:
    """One scored video (generated stream, reconstruction or trivial baseline) of frames [0, end);
    rows of frames before the first scored one are NaN."""

    end: int
    feats: np.ndarray           # (end, D)
    clips: dict[int, np.ndarray]
    psnr: np.ndarray            # (end,)
    ssim: np.ndarray            # (end,)
    mad: np.ndarray             # (end - 1,)


def _prepared(frames, end: int, fid: Backbone, fvd: Backbone, need_clips: bool):
    pf = fid.prepare(frames[:end])
    same = (fvd.input_size, fvd.resize_rule) == (fid.input_size, fid.resize_rule)
    return pf, (pf if same else fvd.prepare(frames[:end])) if need_clips else None


def features(frames, first: int, end: int, starts, fid: Backbone, fvd: Backbone):
    """(frame features (end, D), NaN before `first`; {start: clip feature}) of frames[:end]."""
    starts = sorted(set(starts))
    pf, pv = _prepared(frames, end, fid, fvd, bool(starts))
    f = fid.frame_features(pf, range(first, end))
    feats = np.full((end, f.shape[1]), np.nan)
    feats[first:end] = f
    clips = dict(zip(starts, fvd.clip_features(pv, starts))) if starts else {}
    return feats, clips


def score_real(name: str, frames, end: int, starts, fid: Backbone, fvd: Backbone, cached=None) -> SceneReal:
    """The ground truth of a scene; `cached` = (feats, clips) from the real-feature cache when it fits."""
    feats, clips = cached if cached is not None else features(frames, 0, end, starts, fid, fvd)
    mad = temporal.consecutive_mad(frames, 0, end)
    return SceneReal(name, frames, end, feats, clips, mad)


def _placed(values: np.ndarray, first: int, size: int) -> np.ndarray:
    out = np.full(size, np.nan)
    out[first:first + len(values)] = values
    return out


def score_video(frames, gt: np.ndarray, first: int, end: int, starts, fid: Backbone, fvd: Backbone,
                device: str = "cpu") -> VideoScores:
    """Features, PSNR / SSIM against gt and consecutive differences of frames [first, end)."""
    feats, clips = features(frames, first, end, starts, fid, fvd)
    return VideoScores(end, feats, clips,
                       _placed(paired.psnr(frames[first:end], gt[first:end], device), first, end),
                       _placed(paired.ssim(frames[first:end], gt[first:end], device), first, end),
                       _placed(temporal.consecutive_mad(frames, first, end), first, end - 1))


def _mean(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(x.mean()) if len(x) else float("nan")


def range_scores(v: VideoScores, real: SceneReal, lo: int, hi: int, kid_scale: float) -> dict[str, float]:
    """Per-stream metrics of frames [lo, hi) (module docstring)."""
    g, r = v.feats[lo:hi], real.feats[lo:hi]
    mad_real = _mean(real.mad[lo:hi - 1])
    return {"PSNR": _mean(v.psnr[lo:hi]), "SSIM": _mean(v.ssim[lo:hi]), "KID": kid(g, r, kid_scale),
            "FID": frechet.feature_distance(g, r),
            "temporal_mad_ratio": _mean(v.mad[lo:hi - 1]) / mad_real if mad_real > 0 else float("nan")}


def interleaved(items) -> tuple[list, list]:
    """Even and odd positions of `items`, trimmed to one length (KID compares sets of one size)."""
    a, b = list(items)[0::2], list(items)[1::2]
    n = min(len(a), len(b))
    return a[:n], b[:n]


def floor_range_scores(real: SceneReal, lo: int, hi: int, kid_scale: float) -> dict[str, float]:
    """Real vs real on the range: its even frames against its odd frames."""
    a, b = interleaved(range(lo, hi))
    x, y = real.feats[a], real.feats[b]
    return {"KID": kid(x, y, kid_scale), "FID": frechet.feature_distance(x, y)}


def window_stat(v: VideoScores | None, real: SceneReal, s: int, window: int, kid_scale: float) -> float:
    """The collapse statistic of window [s, s + window): KID vs the same real frames (v None: real floor)."""
    if v is None:
        a, b = interleaved(range(s, s + window))
        return kid(real.feats[a], real.feats[b], kid_scale)
    return kid(v.feats[s:s + window], real.feats[s:s + window], kid_scale)


def clip_sets(v: VideoScores | None, real: SceneReal, starts: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(the video's clip features at `starts`, the real ones) as (k, D) arrays; v None: the real floor,
    even clips against odd clips."""
    if v is None:
        a, b = interleaved(starts)
        gen, ref = [real.clips[s] for s in a], [real.clips[s] for s in b]
    else:
        gen, ref = [v.clips[s] for s in starts], [real.clips[s] for s in starts]
    d = len(next(iter(real.clips.values())))
    return tuple(np.asarray(x, np.float64).reshape(len(x), d) for x in (gen, ref))


@torch.no_grad()
def clip_of(frames: np.ndarray, fvd: Backbone) -> np.ndarray:
    """The clip feature of one explicit clip of frames (clip_frames, H, W, 3)."""
    return fvd.clip_features(fvd.prepare(frames), [0])[0]
