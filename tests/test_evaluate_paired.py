"""PSNR / SSIM (stage/evaluate/paired.py) and temporal consistency sanity."""

import numpy as np

from stage.evaluate import paired, temporal


def _frames(n=4, h=32, w=40, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 255, (1, h // 4, w // 4, 3)).repeat(4, 1).repeat(4, 2)
    return np.clip(base + rng.normal(0, 5, (n, h, w, 3)), 0, 255).astype(np.uint8)


def _noisy(x, std, seed=1):
    return np.clip(x + np.random.default_rng(seed).normal(0, std, x.shape), 0, 255).astype(np.uint8)


def test_identical_frames_give_ssim_one_and_capped_psnr():
    x = _frames()
    assert np.all(paired.ssim(x, x) == 1.0)
    assert np.all(paired.psnr(x, x) == paired.PSNR_CAP_DB)


def test_noise_lowers_psnr_and_ssim_monotonically():
    x = _frames()
    psnrs = [paired.psnr(x, _noisy(x, s)).mean() for s in (2, 8, 32)]
    ssims = [paired.ssim(x, _noisy(x, s)).mean() for s in (2, 8, 32)]
    assert psnrs[0] > psnrs[1] > psnrs[2] and ssims[0] > ssims[1] > ssims[2]
    assert paired.PSNR_CAP_DB > psnrs[0] and ssims[0] < 1


def test_psnr_matches_definition():
    x = np.zeros((1, 8, 8, 3), np.uint8)
    y = np.full((1, 8, 8, 3), 10, np.uint8)
    assert paired.psnr(x, y)[0] == np.float64(10 * np.log10(255 ** 2 / 100))


def test_temporal_consistency():
    still = np.repeat(_frames(1), 5, axis=0)
    assert np.all(temporal.consecutive_mad(still, 1, 5) == 0) and len(temporal.consecutive_mad(still, 1, 5)) == 3
    flicker = _noisy(still, 20)
    assert temporal.consecutive_mad(flicker, 0, 5).mean() > 5
    assert np.all(temporal.consecutive_psnr(still, 0, 5) == paired.PSNR_CAP_DB)
