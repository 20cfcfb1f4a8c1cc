"""Frame ranges that are scored: drift segments, the whole video, the claims' frames; and the drift ratio.

Segments are [k * L, min((k + 1) * L, horizon)), end exclusive; excluded conditioning frames are dropped
from the first one (it scores frames 1-39); a tail shorter than half a segment is not scored per segment.
A stream scores a range only when its scored frames cover the whole range (streams end where their
ground truth ends, as paired and same-segment scores need the real frames).

Distribution metrics of a range compare the stream's frames with the real frames of the same scene and the
same frame indices: per stream for KID and FID (every stream a sample of the bootstrap), pooled over the
streams for FVD (a handful of clips per stream is too few for a Frechet distance).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


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


@dataclass(frozen=True)
class Range:
    """A scored frame range. hi None: each stream's own scored end (the whole video)."""

    key: str            # "overall", "segment 40-80", "frames 480-600"
    start: int          # nominal start (a segment's, or the claim's)
    lo: int             # first scored frame
    hi: int | None      # end exclusive
    clip_stride: int    # start-to-start distance of the FVD clips inside it

    def bounds(self, end: int) -> tuple[int, int] | None:
        """[lo, hi) of a stream whose scored frames are [first, end), or None when it does not cover it."""
        hi = end if self.hi is None else self.hi
        return (self.lo, hi) if end >= hi and hi - self.lo >= 2 else None

    def clip_starts(self, end: int, clip: int) -> list[int]:
        """Starts of the FVD clips inside the range for a stream scored to `end` (none when not covered)."""
        b = self.bounds(end)
        return clip_starts(b[0], b[1], clip, self.clip_stride) if b else []


def drift_ratio(first_kid: float, last_kid: float) -> float | None:
    """KID of the last segment over the first; None when the first is not positive (the unbiased KID of a
    near-perfect segment is ~0 or negative, and a ratio to it means nothing) or either is missing."""
    if first_kid is None or last_kid is None or not math.isfinite(first_kid) or not math.isfinite(last_kid):
        return None
    return last_kid / first_kid if first_kid > 0 else None
