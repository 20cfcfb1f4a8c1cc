"""Time to collapse: when a stream's quality drops below what our own autoencoder delivers, for good.

Window statistic: KID(-proxy) of the stream's frames [s, s + window) against the real frames [s, s + window)
of the same scene, for s = first, first + stride, ... while the window fits in the scored frames.

Threshold (calibrate): factor x max(q_ceiling, q_floor), where q_ceiling is the `quantile` of the ceiling's
window statistics (autoencoder reconstructions vs ground truth, every window of every scene) and q_floor
the same quantile of the absolute real-vs-real floor statistics (even vs odd frames of each real window:
KID around 0, its spread the estimator's noise at this window size). The ceiling is the best any latent
model here can do; the floor term keeps the threshold above the estimator's noise when the reconstructions
are nearly perfect (then q_ceiling ~ 0, and factor x q_ceiling alone would call noise a collapse). A
threshold that is still not positive (identical reconstructions of a static scene) is refused.

Time to collapse (time_to_collapse): the first frame of the first window of the final run of windows whose
statistic exceeds the threshold, when that run reaches the last window and holds at least min_bad_windows
windows ("stays worse from there on"); a shorter final run is not told apart from noise. A stream that does
not collapse gets its scored length (its rollout length when the ground truth covers it).
"""

from __future__ import annotations

import numpy as np

from stage.errors import StageError


def window_starts(first: int, end: int, window: int, stride: int) -> list[int]:
    return list(range(first, end - window + 1, stride))


def calibrate(ceiling: np.ndarray | None, floor: np.ndarray, quantile: float, factor: float) -> dict:
    """The threshold and what it was computed from (metrics.json "collapse" -> "calibration")."""
    ceiling = np.asarray([] if ceiling is None else ceiling, np.float64)
    floor = np.asarray(floor, np.float64)
    ceiling, floor = ceiling[np.isfinite(ceiling)], floor[np.isfinite(floor)]
    if not len(ceiling) and not len(floor):
        raise StageError("collapse threshold: no reference window fits in the scored frames (evaluate.collapse."
                         "window is longer than the ground truth); use a shorter window")
    q_ceiling = float(np.quantile(ceiling, quantile)) if len(ceiling) else None
    q_floor = float(np.quantile(np.abs(floor), quantile)) if len(floor) else None
    base = max(q for q in (q_ceiling, q_floor) if q is not None)
    if not base > 0:
        raise StageError(f"collapse threshold: the {quantile} quantile of the ceiling and real-floor window "
                         f"statistics is {base:.3g}, not positive (reconstructions identical to the ground truth "
                         "and a static scene?); the threshold cannot be calibrated on these references")
    return {"threshold": factor * base, "quantile": quantile, "factor": factor, "ceiling_quantile": q_ceiling,
            "real_floor_quantile": q_floor, "ceiling_windows": int(len(ceiling)), "real_floor_windows": int(len(floor)),
            "source": "max(ceiling, real_floor)" if q_ceiling is not None else "real_floor (no reconstructions)"}


def time_to_collapse(stats, starts, threshold: float, min_bad_windows: int, end: int) -> tuple[int, bool]:
    """(time to collapse, collapsed) of one stream from its window statistics at `starts`; `end` is its
    scored length. NaN statistics count as not worse."""
    stats = np.asarray(stats, np.float64)
    bad = np.nan_to_num(stats, nan=-np.inf) > threshold
    run = 0
    for flag in bad[::-1]:
        if not flag:
            break
        run += 1
    if run >= max(1, min_bad_windows):
        return int(starts[len(bad) - run]), True
    return int(end), False
