"""Long-horizon drift: every metric per segment of `segment_length` frames up to the horizon.

Past the end of a recorded scene there is no paired ground truth, so drift is measured with unpaired
distribution metrics per segment: FID(-proxy) of the segment's frames (all scenes pooled) against ONE
pooled real distribution (all ground-truth frames of the evaluated scenes), and FVD(-proxy) of the
clip_frames-long windows drawn inside the segment (stride evaluate.drift_window_stride) against the
pooled real clips. PSNR and SSIM only for frames with ground truth, temporal MAD everywhere.

Segments are [k * L, min((k + 1) * L, horizon)), end exclusive; excluded conditioning frames are
dropped from the first one (the names say which frames were scored, e.g. `frames 1-39`); a tail
shorter than half a segment is not scored per segment. Segment scores
use few samples (e.g. 80 frames), so their absolute FID is strongly biased upwards: compare them with
the ground_truth and ceiling rows of the same table, not with whole-video scores.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def segments(horizon: int, length: int, first: int) -> list[tuple[int, int, int]]:
    """(nominal start, end exclusive, first scored frame) of each segment with at least half a segment
    (and 2) of scored frames; a shorter tail (e.g. frame 600 of a 601-frame rollout) is dropped, as its
    tiny N would dominate a drift plot."""
    out = []
    for start in range(0, horizon, length):
        end = min(start + length, horizon)
        if end - max(start, first) >= max(2, (length + 1) // 2):
            out.append((start, end, max(start, first)))
    return out


def clip_starts(start: int, end: int, clip: int, stride: int) -> list[int]:
    """Starts s of windows [s, s + clip) inside [start, end)."""
    return list(range(start, end - clip + 1, stride))


@dataclass
class SceneScores:
    """Everything computed for one video; aggregation selects by frame index."""

    frame_index: np.ndarray                  # (n,) frames whose features were taken
    frame_feats: np.ndarray                  # (n, D)
    clip_feats: dict[int, np.ndarray] = field(default_factory=dict)   # start -> (D,)
    paired_index: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    psnr: np.ndarray = field(default_factory=lambda: np.zeros(0))
    ssim: np.ndarray = field(default_factory=lambda: np.zeros(0))
    mad_index: np.ndarray = field(default_factory=lambda: np.zeros(0, int))   # t of transition t -> t+1
    mad: np.ndarray = field(default_factory=lambda: np.zeros(0))
    tpsnr: np.ndarray = field(default_factory=lambda: np.zeros(0))
    mad_gt_index: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    mad_gt: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def frames_in(self, start: int, end: int) -> np.ndarray:
        keep = (self.frame_index >= start) & (self.frame_index < end)
        return self.frame_feats[keep]

    def clips(self, starts) -> np.ndarray:
        return np.stack([self.clip_feats[s] for s in starts]) if starts else np.zeros((0, 0))

    def paired_in(self, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        keep = (self.paired_index >= start) & (self.paired_index < end)
        return self.psnr[keep], self.ssim[keep]

    def transitions_in(self, start: int, end: int):
        """(MAD, tPSNR, ground-truth MAD) of transitions t -> t+1 with start <= t and t + 1 < end."""
        keep = (self.mad_index >= start) & (self.mad_index + 1 < end)
        keep_gt = (self.mad_gt_index >= start) & (self.mad_gt_index + 1 < end)
        return self.mad[keep], self.tpsnr[keep], self.mad_gt[keep_gt]
