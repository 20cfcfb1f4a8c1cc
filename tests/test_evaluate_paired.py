"""PSNR / SSIM (stage/evaluate/paired.py, torchmetrics' arithmetic) and temporal consistency sanity."""

import numpy as np
import pytest

from stage.evaluate import paired, temporal


def _frames(n=4, h=32, w=40, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 255, (1, h // 4, w // 4, 3)).repeat(4, 1).repeat(4, 2)
    return np.clip(base + rng.normal(0, 5, (n, h, w, 3)), 0, 255).astype(np.uint8)


def _noisy(x, std, seed=1):
    return np.clip(x + np.random.default_rng(seed).normal(0, std, x.shape), 0, 255).astype(np.uint8)


def test_identical_frames_give_ssim_one_and_capped_psnr():
    x = _frames()
    assert paired.ssim(x, x) == pytest.approx(np.ones(4), abs=1e-6)
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
    # torchmetrics takes log(10) in float32: 1e-7 relative
    assert paired.psnr(x, y)[0] == pytest.approx(10 * np.log10(255 ** 2 / 100), rel=1e-7)


def test_ssim_of_flat_frames_is_the_luminance_term():
    # constant frames have zero variance, so SSIM = (2 a b + C1) / (a^2 + b^2 + C1) on the luma values
    a, b = np.full((1, 24, 24, 3), 100, np.uint8), np.full((1, 24, 24, 3), 140, np.uint8)
    c1 = (paired.SSIM_K1 * 255) ** 2
    expected = (2 * 100 * 140 + c1) / (100 ** 2 + 140 ** 2 + c1)
    assert paired.ssim(a, b)[0] == pytest.approx(expected, rel=1e-5)


def test_temporal_consistency():
    still = np.repeat(_frames(1), 5, axis=0)
    assert np.all(temporal.consecutive_mad(still, 1, 5) == 0) and len(temporal.consecutive_mad(still, 1, 5)) == 3
    flicker = _noisy(still, 20)
    assert temporal.consecutive_mad(flicker, 0, 5).mean() > 5
    assert np.all(temporal.consecutive_psnr(still, 0, 5) == paired.PSNR_CAP_DB)


def test_ssim_is_torchmetrics_ssim():
    from torchmetrics.functional.image import structural_similarity_index_measure as tm_ssim
    import torch
    x = _frames(6, 48, 64, seed=3)
    for y in (_noisy(x, 3), _noisy(x, 30), np.random.default_rng(4).integers(0, 256, x.shape, dtype=np.uint8)):
        luma = [torch.from_numpy(v).float() @ (paired.LUMA_WEIGHTS / 255) for v in (x, y)]
        reference = tm_ssim(luma[0][:, None], luma[1][:, None], gaussian_kernel=True, sigma=1.5, kernel_size=11,
                            data_range=1.0, reduction="none").double().numpy()
        assert paired.ssim(x, y) == pytest.approx(reference, abs=1e-5)
