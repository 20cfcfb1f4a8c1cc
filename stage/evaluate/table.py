"""Every score of every row (variant or reference) on every stream and frame range, and their bootstrap.

    table = ScoreTable(rows, streams, ends, reals, ranges, clip_frames, kid_scale)
    table.compute(window=40, stride=10)        # per-stream values, clips of pooled scores, collapse windows
    table.resample(counts, level)              # point estimates, resampled statistics, intervals
    table.summary(row, range_key, metric)      # {"mean", "ci_low", "ci_high", "n_streams"}
    table.difference(a, b, range_key, metric)  # paired: (effect, ci_low, ci_high, n_streams)

Rows whose videos depend on the scene only (the references) are scored once per scene and range.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from stage.evaluate import bootstrap, collapse, drift
from stage.evaluate.scores import (POOLED, SceneReal, VideoScores, clip_sets, floor_range_scores, range_scores,
                                   window_stat)


@dataclass
class Row:
    """One row of the tables: video(stream) gives its scores on a stream (None: the real floor)."""

    name: str
    kind: str
    video: Callable[[tuple[str, int]], VideoScores | None]
    per_scene: bool = False       # the same video for every seed of a scene
    description: str = ""


@dataclass
class _Stat:
    point: float | None
    resampled: np.ndarray
    n_streams: int
    n_clips: int | None = None       # pooled scores: the clips pooled over the streams
    interval: tuple = (None, None)


@dataclass
class ScoreTable:
    rows: list[Row]
    streams: list[tuple[str, int]]
    ends: dict[tuple[str, int], int]           # scored end of each stream
    reals: dict[str, SceneReal]
    ranges: list[drift.Range]
    clip_frames: int
    kid_scale: float
    pooled: bool = True                            # score FVD (pooled clips); off for the one-step runs
    values: dict = field(default_factory=dict)     # (row, range key, metric) -> (S,) NaN = not covered
    clips: dict = field(default_factory=dict)      # (row, range key) -> (gen, real): per stream (k, D) or None
    windows: dict = field(default_factory=dict)    # row -> [(starts, stats)] per stream
    stats: dict = field(default_factory=dict)      # (row, range key, metric) -> _Stat
    dims: int = 0                                  # clip feature dimension (set by compute)
    level: float = 0.95                            # interval level (set by resample)

    def metrics(self, row: str, key: str) -> list[str]:
        return [m for (r, k, m) in self.values if r == row and k == key] + \
            (list(POOLED) if (row, key) in self.clips else [])

    # ---- per-stream values ----------------------------------------------------------------------
    def compute(self, window: int | None = None, stride: int | None = None, first: int = 1) -> None:
        S = len(self.streams)
        d = max((len(next(iter(r.clips.values()))) for r in self.reals.values() if r.clips), default=0)
        real_clips: dict = {}       # (scene, range): the real clips, one array shared by every row and seed
        for row in self.rows:
            memo: dict = {}
            windows = []
            for i, st in enumerate(self.streams):
                v, real, end = row.video(st), self.reals[st[0]], self.ends[st]
                for rng in self.ranges:
                    b = rng.bounds(end)
                    if b is None:
                        continue
                    key = (st[0] if row.per_scene else st, rng.key)
                    if key not in memo:
                        sc = range_scores(v, real, *b, self.kid_scale) if v is not None else \
                            floor_range_scores(real, *b, self.kid_scale)
                        starts = rng.clip_starts(end, self.clip_frames) if self.pooled and d else []
                        sets = clip_sets(v, real, starts) if starts else None
                        if sets is not None and v is not None:
                            sets = (sets[0], real_clips.setdefault((st[0], rng.key), sets[1]))
                        memo[key] = (sc, sets)
                    sc, sets = memo[key]
                    for m, x in sc.items():
                        self.values.setdefault((row.name, rng.key, m), np.full(S, np.nan))[i] = x
                    if sets is not None:
                        gen, ref = self.clips.setdefault((row.name, rng.key), ([None] * S, [None] * S))
                        gen[i], ref[i] = sets
                if window:
                    wkey = (st[0] if row.per_scene else st, "windows")
                    if wkey not in memo:
                        ws = collapse.window_starts(first, end, window, stride)
                        memo[wkey] = (ws, np.array([window_stat(v, real, s, window, self.kid_scale) for s in ws]))
                    windows.append(memo[wkey])
            self.windows[row.name] = windows
        self.dims = d

    # ---- bootstrap ------------------------------------------------------------------------------
    def resample(self, counts: np.ndarray, level: float) -> None:
        ones = np.ones((1, len(self.streams)), dtype=counts.dtype)
        for key, v in self.values.items():
            have = np.isfinite(v)
            point = float(v[have].mean()) if have.any() else None
            self.stats[key] = _Stat(point, bootstrap.mean_resamples(v, counts), int(have.sum()))
        for (row, rkey), (gen, ref) in self.clips.items():
            gen, ref = bootstrap.ClipSide(gen, self.dims), bootstrap.ClipSide(ref, self.dims)
            point = float(bootstrap.pooled_frechet_resamples(gen, ref, ones)[0])
            self.stats[(row, rkey, "FVD")] = _Stat(point if np.isfinite(point) else None,
                                                   bootstrap.pooled_frechet_resamples(gen, ref, counts),
                                                   gen.n_streams, n_clips=gen.n_clips)
        for s in self.stats.values():
            s.interval = bootstrap.interval(s.resampled, level) if s.point is not None else (None, None)
        self.level = level

    def summary(self, row: str, key: str, metric: str) -> dict | None:
        s = self.stats.get((row, key, metric))
        if s is None:
            return None
        return {"mean": s.point, "ci_low": s.interval[0], "ci_high": s.interval[1], "n_streams": s.n_streams}

    def difference(self, a: str, b: str, key: str, metric: str) -> dict | None:
        """Paired a - b: the same resamples (same streams) on both sides."""
        sa, sb = self.stats.get((a, key, metric)), self.stats.get((b, key, metric))
        if sa is None or sb is None or sa.point is None or sb.point is None:
            return None
        if metric in POOLED:
            effect, n = sa.point - sb.point, min(sa.n_streams, sb.n_streams)
        else:
            both = np.isfinite(self.values[(a, key, metric)]) & np.isfinite(self.values[(b, key, metric)])
            if not both.any():
                return None
            effect = float((self.values[(a, key, metric)] - self.values[(b, key, metric)])[both].mean())
            n = int(both.sum())
        lo, hi = bootstrap.interval(sa.resampled - sb.resampled, self.level)
        return {"effect": effect, "ci_low": lo, "ci_high": hi, "n_streams": n}
