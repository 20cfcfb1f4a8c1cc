"""Reference rows scored on the same streams and frames as every variant.

    ceiling           the ground truth encoded + decoded by our autoencoder: the best a latent model can do
    still_photograph  the first real frame repeated: what a model that stops moving scores
    persistence       frame t predicted as real frame t - 1: what copying the last real frame scores
    latent_persistence  frame t predicted as the reconstruction of real frame t - 1 (one-step table only):
                      "nothing moved" in the model's own latent space, so a teacher-forced frame is compared
                      with the same copy seen through the same autoencoder
    real_floor        real vs real on the same windows (even vs odd frames): the metric's own noise floor

A world model that does not beat still_photograph and persistence has learnt nothing about the scene's
motion. The references depend on the scene only, so every seed of a scene shares one (its bootstrap
resamples still count them once per stream, as the variants' streams are). still_photograph and
persistence reuse the ground truth's features (a repeated or shifted real frame has the real frame's
features); only the still clip goes through the clip detector.
"""

from __future__ import annotations

import numpy as np

from stage.evaluate import paired
from stage.evaluate.backbones import Backbone
from stage.evaluate.scores import SceneReal, VideoScores, clip_of, score_video

KINDS = ("ceiling", "still_photograph", "persistence", "latent_persistence", "real_floor")
DESCRIPTIONS = {
    "ceiling": "ground truth encoded + decoded by the autoencoder (one per scene, the same for every seed)",
    "still_photograph": "the first real frame repeated",
    "persistence": "frame t predicted as real frame t-1",
    "latent_persistence": "frame t predicted as the autoencoder's reconstruction of real frame t-1",
    "real_floor": "real vs real on the same windows: even vs odd frames (and clips) of the ground truth",
}


def _previous(end: int) -> np.ndarray:
    """Index of the frame before each of frames [0, end); frame 0 (the real conditioning frame) is its own."""
    return np.maximum(np.arange(end) - 1, 0)


def _paired(pred_index: np.ndarray, real: SceneReal, first: int, device: str) -> tuple[np.ndarray, np.ndarray]:
    """PSNR / SSIM of real frames pred_index[t] as predictions of real frame t, for t in [first, end)."""
    psnr, ssim = np.full(real.end, np.nan), np.full(real.end, np.nan)
    t = np.arange(first, real.end)
    if len(t):
        pred = real.frames[pred_index[first:real.end]]
        psnr[first:] = paired.psnr(pred, real.frames[t], device)
        ssim[first:] = paired.ssim(pred, real.frames[t], device)
    return psnr, ssim


def still_photograph(real: SceneReal, first: int, fvd: Backbone, device: str = "cpu") -> VideoScores:
    index = np.zeros(real.end, dtype=int)
    clip = clip_of(np.repeat(real.frames[:1], fvd.clip_frames, axis=0), fvd)
    psnr, ssim = _paired(index, real, first, device)
    return VideoScores(real.end, real.feats[index], {s: clip for s in real.clips}, psnr, ssim,
                       np.zeros(max(real.end - 1, 0)))


def persistence(real: SceneReal, first: int, fvd: Backbone, device: str = "cpu") -> VideoScores:
    """Frame t = real frame max(t - 1, 0) (frame 0 has no predecessor: it is the real conditioning frame)."""
    index = _previous(real.end)
    clips = {}
    for s in real.clips:
        if s - 1 in real.clips:
            clips[s] = real.clips[s - 1]
        elif s + fvd.clip_frames <= real.end:      # only the clip at 0 (first = 0) has no shifted real clip
            clips[s] = clip_of(np.asarray(real.frames[index[s:s + fvd.clip_frames]]), fvd)
    psnr, ssim = _paired(index, real, first, device)
    mad = np.concatenate([[0.0], real.mad[:-1]]) if real.end > 1 else np.zeros(0)
    return VideoScores(real.end, real.feats[index], clips, psnr, ssim, mad)


def latent_persistence(recon_frames, gt: np.ndarray, first: int, end: int, fid: Backbone, fvd: Backbone,
                       device: str = "cpu") -> VideoScores:
    """Frame t = the reconstruction of real frame max(t - 1, 0); frame features, no clips."""
    lagged = np.asarray(recon_frames[:end])[_previous(end)]
    return score_video(lagged, gt, first, end, [], fid, fvd, device)
