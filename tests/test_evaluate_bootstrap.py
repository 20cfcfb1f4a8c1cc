"""Bootstrap over streams (stage/evaluate/bootstrap.py): intervals cover a known difference and have the
width normal theory predicts; pairing narrows them; the scene unit resamples seeds together."""

import numpy as np
import pytest

from stage.evaluate import bootstrap

N, B, LEVEL, DELTA = 30, 1000, 0.95, 0.4
Z = 1.959964


def _scores(rng):
    """Per-stream scores of two variants: a large shared stream effect, a small paired difference."""
    stream = rng.normal(10.0, 2.0, N)
    a = stream + rng.normal(0, 0.3, N)
    b = stream - DELTA + rng.normal(0, 0.3, N)
    return a, b


def test_paired_interval_covers_the_difference_with_the_normal_theory_width():
    counts = bootstrap.counts(list(range(N)), B, seed=0)
    assert counts.shape == (B, N) and (counts.sum(axis=1) == N).all()
    rng = np.random.default_rng(1)
    covered, ratios = 0, []
    for _ in range(200):
        a, b = _scores(rng)
        diff = bootstrap.mean_resamples(a, counts) - bootstrap.mean_resamples(b, counts)
        lo, hi = bootstrap.interval(diff, LEVEL)
        covered += lo <= DELTA <= hi
        d = a - b
        ratios.append((hi - lo) / (2 * Z * d.std(ddof=1) / np.sqrt(N)))
    assert 0.88 <= covered / 200 <= 0.99, covered
    # the percentile interval of a mean is the normal one shrunk by sqrt((N-1)/N), plus resampling noise
    assert np.mean(ratios) == pytest.approx(np.sqrt((N - 1) / N), rel=0.05)
    assert 0.8 < min(ratios) and max(ratios) < 1.15


def test_pairing_removes_the_shared_stream_effect():
    counts = bootstrap.counts(list(range(N)), B, seed=0)
    a, b = _scores(np.random.default_rng(2))
    paired = bootstrap.interval(bootstrap.mean_resamples(a, counts) - bootstrap.mean_resamples(b, counts), LEVEL)
    other = bootstrap.counts(list(range(N)), B, seed=1)           # independent resamples of b: unpaired
    unpaired = bootstrap.interval(bootstrap.mean_resamples(a, counts) - bootstrap.mean_resamples(b, other), LEVEL)
    assert paired[0] > 0 and unpaired[0] < 0 < unpaired[1]        # only the paired interval sees the difference
    assert (paired[1] - paired[0]) < 0.3 * (unpaired[1] - unpaired[0])


def test_uncovered_streams_drop_out_and_scene_unit_draws_seeds_together():
    counts = bootstrap.counts(list(range(4)), B, seed=0)
    values = np.array([1.0, 2.0, np.nan, 3.0])
    res = bootstrap.mean_resamples(values, counts)
    assert np.nanmin(res) >= 1.0 and np.nanmax(res) <= 3.0
    assert np.isnan(res[(counts[:, [0, 1, 3]] == 0).all(axis=1)]).all()
    scenes = ["s0", "s0", "s0", "s1", "s1", "s1"]
    c = bootstrap.counts(scenes, B, seed=0)
    assert (c[:, 0] == c[:, 1]).all() and (c[:, 3] == c[:, 5]).all() and (c.sum(axis=1) == 6).all()
    assert bootstrap.counts(scenes, B, seed=0).tolist() == c.tolist()     # fixed seed, same table
    lo, hi = bootstrap.interval(np.array([np.nan, 1.0, 2.0, 3.0]), 0.5)
    assert (lo, hi) == (1.5, 2.5)
