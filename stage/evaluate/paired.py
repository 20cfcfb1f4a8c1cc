"""Paired per-frame metrics against ground truth: PSNR and SSIM.

Both are computed per frame at the native (generation) resolution, data range 255, and averaged over
frames (the per-frame mean, as video papers report it).

- PSNR: torchmetrics peak_signal_noise_ratio over all pixels and channels of the RGB frame. Identical
  frames give MSE 0 and infinite PSNR; it is capped at PSNR_CAP_DB = 100 dB (an 8-bit error of one level in
  1 pixel of 128x224x3 is ~ 98 dB) so means and JSON stay finite.
- SSIM: the SSIM of torchmetrics' structural_similarity_index_measure (Wang et al. 2004: 11x11 Gaussian
  window, sigma 1.5, K1 = 0.01, K2 = 0.03; its Gaussian weights, its variance clamp, its full-size map over
  the frame padded by reflection, averaged over the map) on the BT.601 luma (Y = 0.299 R + 0.587 G +
  0.114 B: the reference MATLAB code scores grayscale, and it is 3x cheaper than SSIM per RGB channel).
  The window sums are banded matrix products here instead of torchmetrics' depthwise 11x11 convolution,
  which runs at ~2 GFLOP/s on CPU (~10 ms per 128x224 frame: minutes for 60 streams x 600 frames); the
  products give the same map ~5x faster (tests/test_evaluate_paired.py holds the two to 1e-5). Luma in
  float32 divided by 255 with data range 1 (the same SSIM as 0..255 with range 255; float32 on 0..255
  loses ~1e-3 in E[x^2] - E[x]^2). Identical frames give 1 (to float32 round-off).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics.functional.image import peak_signal_noise_ratio
from torchmetrics.functional.image.utils import _gaussian

PSNR_CAP_DB = 100.0
SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03
DATA_RANGE = 255.0
LUMA_WEIGHTS = torch.tensor([0.299, 0.587, 0.114])
CHUNK = 32


def describe() -> dict:
    """The paired protocol, for protocol hashes."""
    return {"psnr": {"implementation": "torchmetrics peak_signal_noise_ratio", "data_range": DATA_RANGE,
                     "cap_db": PSNR_CAP_DB, "channels": "RGB"},
            "ssim": {"implementation": "torchmetrics structural_similarity_index_measure's SSIM, banded products",
                     "data_range": DATA_RANGE, "computed_as": "float32 luma / 255, data_range 1",
                     "window": SSIM_WINDOW, "sigma": SSIM_SIGMA, "k1": SSIM_K1, "k2": SSIM_K2,
                     "channels": "BT.601 luma"}}


def _chunks(a: np.ndarray, b: np.ndarray, device: str):
    for i in range(0, len(a), CHUNK):
        yield tuple(torch.from_numpy(np.array(x[i:i + CHUNK])).to(device) for x in (a, b))


def psnr(a: np.ndarray, b: np.ndarray, device: str = "cpu") -> np.ndarray:
    """Per-frame PSNR (dB, capped) of uint8 (N, H, W, 3) pairs -> float64 (N,)."""
    out = [peak_signal_noise_ratio(x.float(), y.float(), data_range=DATA_RANGE, reduction="none", dim=(1, 2, 3))
           for x, y in _chunks(a, b, device)]
    if not out:
        return np.zeros(0)
    return np.minimum(torch.cat(out).cpu().numpy(), PSNR_CAP_DB)


def _luma(x: torch.Tensor) -> torch.Tensor:
    """uint8 (n, H, W, 3) RGB -> float32 (n, 1, H, W) BT.601 luma in 0..1."""
    return (x.float() @ (LUMA_WEIGHTS / DATA_RANGE).to(x.device))[:, None]


def _band(n: int, kernel: torch.Tensor) -> torch.Tensor:
    """(n - k + 1, n) matrix whose row i holds the kernel at columns i .. i + k - 1: a 'valid' 1-D filter."""
    k = len(kernel)
    band = torch.zeros(n - k + 1, n, dtype=kernel.dtype, device=kernel.device)
    for i in range(k):
        band.diagonal(i)[:] = kernel[i]
    return band


def ssim(a: np.ndarray, b: np.ndarray, device: str = "cpu") -> np.ndarray:
    """Per-frame SSIM of uint8 (N, H, W, 3) pairs on BT.601 luma -> float64 (N,)."""
    if not len(a):
        return np.zeros(0)
    H, W = a.shape[1:3]
    pad = SSIM_WINDOW // 2
    g = _gaussian(SSIM_WINDOW, SSIM_SIGMA, torch.float32, device)[0]
    rows, cols = _band(H + 2 * pad, g), _band(W + 2 * pad, g).T
    c1, c2 = SSIM_K1 ** 2, SSIM_K2 ** 2
    out = []
    for x, y in _chunks(a, b, device):
        x, y = (F.pad(_luma(v), (pad, pad, pad, pad), mode="reflect")[:, 0] for v in (x, y))
        maps = torch.stack([x, y, x * x, y * y, x * y])                       # (5, n, H + 2 pad, W + 2 pad)
        # two large GEMMs (every row of every map at once) rather than many small batched products
        m = (maps.reshape(-1, maps.shape[-1]) @ cols).reshape(*maps.shape[:-1], -1)
        m = (rows @ m.transpose(-1, -2).reshape(-1, m.shape[-2]).T).T.reshape(*m.shape[:2], m.shape[-1], -1)
        mx, my, exx, eyy, exy = m.transpose(-1, -2)
        # ((2 mx my + C1)(2 sxy + C2)) / ((mx^2 + my^2 + C1)(sxx + syy + C2)), in place (the maps are large)
        mxy, mx2, my2 = mx * my, mx.square_(), my.square_()
        sxx, syy = exx.sub_(mx2).clamp_min_(0), eyy.sub_(my2).clamp_min_(0)     # torchmetrics clamps the variances
        upper = exy.sub_(mxy).mul_(2).add_(c2).mul_(mxy.mul_(2).add_(c1))
        smap = upper.div_(mx2.add_(my2).add_(c1).mul_(sxx.add_(syy).add_(c2)))
        out.append(smap.flatten(1).double().mean(1))
    return torch.cat(out).cpu().numpy()
