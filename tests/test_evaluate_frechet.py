"""Frechet distance (stage/evaluate/frechet.py) against closed forms, and its batched form."""

import numpy as np
import pytest

from stage.evaluate import bootstrap, frechet


def test_closed_form_commuting_covariances():
    # diagonal covariances commute: tr(S1 + S2 - 2 sqrt(S1 S2)) = sum (sqrt(a) - sqrt(b))^2
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([3.0, 1.0, 2.0])
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.25])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)


def test_closed_form_rotated_common_eigenbasis():
    # S1 = Q A Q^T, S2 = Q B Q^T share eigenvectors, so the diagonal formula holds in any rotation
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(4, 4)))
    a, b = np.array([0.5, 2.0, 3.0, 8.0]), np.array([2.0, 2.0, 0.1, 1.0])
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    expected = 1.0 + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet.frechet_distance(np.zeros(4), s1, np.eye(4)[0], s2) == pytest.approx(expected, rel=1e-8)


def test_zero_for_identical_and_symmetric():
    x = np.random.default_rng(1).normal(size=(200, 8))
    y = np.random.default_rng(2).normal(size=(200, 8)) * 1.5 + 0.3
    sx, sy = frechet.fit(x), frechet.fit(y)
    assert frechet.distance(sx, sx) == pytest.approx(0.0, abs=1e-8)
    assert frechet.distance(sx, sy) == pytest.approx(frechet.distance(sy, sx), rel=1e-8)
    assert frechet.distance(sx, sy) > 0.5


def test_singular_covariances_and_stats_roundtrip(tmp_path):
    # fewer samples than dimensions: singular covariances must still give a finite, real number
    x = np.random.default_rng(3).normal(size=(5, 16))
    y = np.random.default_rng(4).normal(size=(5, 16))
    d = frechet.distance(frechet.fit(x), frechet.fit(y))
    assert np.isfinite(d) and d > 0
    path = tmp_path / "stats.npz"
    frechet.save_stats(path, {"all": frechet.fit(x)}, {"hash": "abc"})
    stats, info = frechet.load_stats(path)
    assert info == {"hash": "abc"} and stats["all"].n == 5
    assert stats["all"].mu.dtype == np.float64 and np.array_equal(stats["all"].sigma, frechet.fit(x).sigma)


@pytest.mark.parametrize("n_clips, dims", [(8, 4), (2, 12), (3, 5)])   # full rank; fewer clips than dimensions
def test_pooled_resamples_equal_the_distance_of_the_pooled_clips(n_clips, dims):
    rng = np.random.default_rng(5)
    streams = [rng.normal(size=(n_clips, dims)) * (1 + i) for i in range(5)]
    scenes = [rng.normal(size=(n_clips, dims)) + 0.5 for _ in range(3)]
    real = [scenes[0], scenes[0], scenes[1], scenes[2], scenes[2]]        # two seeds of scenes 0 and 2
    gen_side, real_side = bootstrap.ClipSide(streams, dims), bootstrap.ClipSide(real, dims)
    assert len(real_side.x) == 3 * n_clips and real_side.n_clips == 5 * n_clips   # shared clips stored once
    counts = bootstrap.counts(list(range(5)), 7, seed=3)
    pooled = bootstrap.pooled_frechet_resamples(gen_side, real_side, counts)
    for row, value in zip(counts, pooled):
        gen = np.concatenate([x for x, c in zip(streams, row) for _ in range(c)])
        ref = np.concatenate([x for x, c in zip(real, row) for _ in range(c)])
        assert value == pytest.approx(frechet.feature_distance(gen, ref), rel=1e-7, abs=1e-9)
