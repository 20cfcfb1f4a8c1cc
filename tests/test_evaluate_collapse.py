"""Time to collapse and its threshold (stage/evaluate/collapse.py) on constructed statistic sequences."""

import numpy as np
import pytest

from stage.errors import StageError
from stage.evaluate import collapse

STARTS = list(range(1, 1 + 10 * 10, 10))      # windows at frames 1, 11, ..., 91
END = 120


@pytest.mark.parametrize("stats, expected", [
    ([0.1] * 10, (END, False)),                                   # never worse
    ([0.1] * 6 + [5.0] * 4, (61, True)),                          # worse from window 6 on
    ([5.0] * 10, (1, True)),                                      # worse from the start
    ([0.1, 5.0, 5.0, 0.1] + [0.1] * 6, (END, False)),             # a bad stretch that recovers is no collapse
    ([0.1, 5.0, 0.1, 5.0, 5.0, 5.0, 0.1, 5.0, 5.0, 5.0], (71, True)),   # the FINAL run counts
    ([0.1] * 9 + [5.0], (END, False)),                            # a single bad last window: min_bad_windows 2
    ([0.1] * 7 + [5.0, np.nan, 5.0], (END, False)),               # NaN is not worse
    ([0.1] * 8 + [1.0, 1.0], (END, False)),                       # equal to the threshold is not worse
])
def test_time_to_collapse(stats, expected):
    assert collapse.time_to_collapse(stats, STARTS, 1.0, 2, END) == expected


def test_min_bad_windows_and_no_windows():
    stats = [0.1] * 9 + [5.0]
    assert collapse.time_to_collapse(stats, STARTS, 1.0, 1, END) == (91, True)
    assert collapse.time_to_collapse([], [], 1.0, 2, 30) == (30, False)
    assert collapse.window_starts(1, 60, 40, 10) == [1, 11]


def test_threshold_is_robust_to_a_perfect_ceiling():
    rng = np.random.default_rng(0)
    floor = np.abs(rng.normal(0, 1e-3, 50))
    # a near-perfect autoencoder: its windows score ~0; the floor's noise sets the scale
    near_zero = rng.normal(0, 1e-9, 50)
    cal = collapse.calibrate(near_zero, floor, 0.95, 2.0)
    assert cal["threshold"] == pytest.approx(2.0 * np.quantile(floor, 0.95)) and cal["threshold"] > 1e-4
    worse = rng.uniform(0.01, 0.02, 50)
    cal = collapse.calibrate(worse, floor, 0.95, 2.0)
    assert cal["threshold"] == pytest.approx(2.0 * np.quantile(worse, 0.95))
    assert cal["ceiling_windows"] == 50 and cal["source"].startswith("max(")
    assert collapse.calibrate(None, floor, 0.9, 3.0)["source"].startswith("real_floor")
    # the floor counts by its spread: a negative floor (interleaved frames) still sets a positive scale
    assert collapse.calibrate(-np.abs(near_zero), -floor, 0.95, 2.0)["threshold"] == pytest.approx(
        2.0 * np.quantile(floor, 0.95))
    with pytest.raises(StageError, match="not positive"):
        collapse.calibrate(np.zeros(5), np.zeros(5), 0.95, 2.0)
    with pytest.raises(StageError, match="window"):
        collapse.calibrate(np.zeros(0), np.zeros(0), 0.95, 2.0)
