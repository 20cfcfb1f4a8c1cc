"""Bootstrap over streams: percentile intervals of means (and pooled scores) and of paired differences.

One table of resample counts (counts: B resamples x S streams, how often each stream is drawn) is drawn
once from a fixed seed and used for every variant, metric and frame range. So the interval of a
difference a - b is paired: each resample takes the same streams (same scene and seed) on both sides.

- unit "stream": draw S streams with replacement (streams treated as independent samples);
- unit "scene": draw scenes with replacement and take all their seeds (honest when the seeds of one scene
  vary less than the scenes do, at the price of fewer, coarser units).

A stream that does not cover a range (its ground truth ends earlier) has no value there and drops out of
that range's resamples; a resample without any covering stream gives NaN and is left out of the interval.
"""

from __future__ import annotations

import numpy as np

from stage.evaluate import frechet

METHOD = "percentile"


def counts(groups: list, resamples: int, seed: int) -> np.ndarray:
    """(B, S) int draw counts; groups[s] is stream s's resampling unit (its own index, or its scene)."""
    names = list(dict.fromkeys(groups))
    index = np.array([names.index(g) for g in groups])
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(names), size=(resamples, len(names)))
    per_unit = np.zeros((resamples, len(names)), dtype=np.int64)
    np.add.at(per_unit, (np.arange(resamples)[:, None], draws), 1)
    return per_unit[:, index]


def mean_resamples(values: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Resampled means (B,) of per-stream values (S,), NaN = stream not covered."""
    values = np.asarray(values, np.float64)
    have = np.isfinite(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (c @ np.where(have, values, 0.0)) / (c @ have)


class ClipSide:
    """One side of a pooled score: per stream its clip features (k, D) or None. Streams that share one array
    (the real clips of a scene, a reference row's clips) share its rows, weighted by all their draws."""

    def __init__(self, per_stream: list, dims: int):
        units, index, use = [], {}, []
        for s, arr in enumerate(per_stream):
            if arr is None or not len(arr):
                continue
            if id(arr) not in index:
                index[id(arr)] = len(units)
                units.append(np.asarray(arr, np.float64))
                use.append(np.zeros(len(per_stream)))
            use[index[id(arr)]][s] = 1.0
        self.x = np.concatenate(units) if units else np.zeros((0, dims))
        self.unit_of_row = np.repeat(np.arange(len(units)), [len(u) for u in units]).astype(int)
        self.use = np.stack(use) if use else np.zeros((0, len(per_stream)))
        self.n_streams = int(self.use.sum())
        self.n_clips = int(sum(len(u) * c for u, c in zip(units, self.use.sum(1))))

    def weights(self, c: np.ndarray) -> np.ndarray:
        """(B, rows): how often resample b draws each row."""
        return (np.asarray(c, np.float64) @ self.use.T)[:, self.unit_of_row]


def pooled_frechet_resamples(gen: ClipSide, real: ClipSide, c: np.ndarray) -> np.ndarray:
    """Resampled Frechet distances (B,) of the clips pooled over the drawn streams."""
    return frechet.weighted_distance_batch(gen.x, gen.weights(c), real.x, real.weights(c))


def interval(resampled: np.ndarray, level: float) -> tuple[float | None, float | None]:
    """Percentile interval at `level` of the finite resampled values."""
    x = np.asarray(resampled, np.float64)
    x = x[np.isfinite(x)]
    if not len(x):
        return None, None
    lo, hi = np.percentile(x, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def summary(point: float | None, resampled: np.ndarray, level: float, n_streams: int) -> dict:
    lo, hi = interval(resampled, level) if point is not None else (None, None)
    return {"mean": point, "ci_low": lo, "ci_high": hi, "n_streams": int(n_streams)}
