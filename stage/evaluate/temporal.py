"""Temporal consistency: how much consecutive frames differ, for generated video and ground truth.

For each transition t -> t+1 inside [start, end):
- MAD: mean absolute difference of the uint8 frames (0-255 units, all pixels and channels);
- tPSNR: PSNR between the two frames (dB, capped as in paired.py).
Flicker raises the generated MAD above the ground truth's over the same frames, a frozen video lowers
it; their ratio (generated / ground truth) is reported as temporal_mad_ratio (1 = real-like motion).
"""

from __future__ import annotations

import numpy as np

from stage.evaluate.paired import psnr

CHUNK = 64


def consecutive_mad(frames: np.ndarray, start: int, end: int) -> np.ndarray:
    """MAD of transitions t -> t+1 for start <= t and t+1 < end -> float64 (max(end-start-1, 0),)."""
    out = []
    for i in range(start, end - 1, CHUNK):
        j = min(i + CHUNK, end - 1)
        block = np.asarray(frames[i:j + 1], dtype=np.int16)
        out.append(np.abs(np.diff(block, axis=0)).reshape(j - i, -1).mean(axis=1))
    return np.concatenate(out) if out else np.zeros(0)


def consecutive_psnr(frames: np.ndarray, start: int, end: int) -> np.ndarray:
    """PSNR between frames t and t+1 for the same transitions as consecutive_mad."""
    if end - start < 2:
        return np.zeros(0)
    return np.concatenate([psnr(frames[i:min(i + CHUNK, end - 1)], frames[i + 1:min(i + CHUNK, end - 1) + 1])
                           for i in range(start, end - 1, CHUNK)])
