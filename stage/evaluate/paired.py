"""Paired per-frame metrics against ground truth: PSNR and SSIM.

Both are computed per frame at the native (generation) resolution on uint8 RGB, data range 255, and
averaged over frames (the per-frame mean, as video papers report it).

- PSNR = 10 log10(255^2 / MSE) over all pixels and channels. Identical frames give MSE 0 and infinite
  PSNR; it is capped at PSNR_CAP_DB = 100 dB (an 8-bit error of one level in 1 pixel of 128x224x3 is
  ~ 98 dB) so means and JSON stay finite.
- SSIM (Wang et al. 2004): 11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03, computed on the
  BT.601 luma (Y = 0.299 R + 0.587 G + 0.114 B; the reference MATLAB code scores grayscale images, and it
  is 3x cheaper than per-RGB-channel SSIM) with a separable 'valid' convolution (no padding, as the
  reference code) and averaged over the map. Identical frames give exactly 1.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

PSNR_CAP_DB = 100.0
SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03
DATA_RANGE = 255.0
LUMA_WEIGHTS = torch.tensor([0.299, 0.587, 0.114])
CHUNK = 32


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-frame PSNR (dB, capped) of uint8 (N, H, W, 3) pairs -> float64 (N,)."""
    out = []
    for i in range(0, len(a), CHUNK):
        d = np.asarray(a[i:i + CHUNK], dtype=np.int32) - np.asarray(b[i:i + CHUNK], dtype=np.int32)
        mse = (d * d).reshape(len(d), -1).mean(axis=1)          # exact: int32 squares, float64 mean
        with np.errstate(divide="ignore"):
            val = 10 * np.log10(DATA_RANGE ** 2 / mse)
        out.append(np.minimum(val, PSNR_CAP_DB))
    return np.concatenate(out) if out else np.zeros(0)


def _gaussian_kernel(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    return (g / g.sum()).float()


def _luma(frames: np.ndarray) -> torch.Tensor:
    """uint8 (n, H, W, 3) RGB -> float32 (n, H, W) BT.601 luma in [0, 1]."""
    x = torch.from_numpy(np.array(frames)).float()
    return (x @ LUMA_WEIGHTS).div_(DATA_RANGE)


def ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-frame SSIM of uint8 (N, H, W, 3) pairs -> float64 (N,), on BT.601 luma.

    float32, luma scaled to [0, 1] (so E[x^2] - E[x]^2 keeps its precision); the five local moments go
    through one separable depthwise Gaussian blur (channels_last, the fast CPU path)."""
    H, W = a.shape[1:3]
    size = min(SSIM_WINDOW, H, W)
    size -= (size + 1) % 2                          # odd window
    g = _gaussian_kernel(size, SSIM_SIGMA)
    gh, gw = g.view(1, 1, size, 1).repeat(5, 1, 1, 1), g.view(1, 1, 1, size).repeat(5, 1, 1, 1)
    c1, c2 = SSIM_K1 ** 2, SSIM_K2 ** 2             # data range 1 after scaling
    out = []
    for i in range(0, len(a), CHUNK):
        x, y = _luma(a[i:i + CHUNK]), _luma(b[i:i + CHUNK])
        buf = torch.empty(*x.shape, 5)                               # channels_last memory, filled in place
        buf[..., 0], buf[..., 1] = x, y
        torch.mul(x, x, out=buf[..., 2]), torch.mul(y, y, out=buf[..., 3]), torch.mul(x, y, out=buf[..., 4])
        stack = buf.permute(0, 3, 1, 2)
        m = F.conv2d(F.conv2d(stack, gh, groups=5), gw, groups=5).permute(1, 0, 2, 3).contiguous()
        mx, my, exx, eyy, exy = m
        mxy, mx2, my2 = mx * my, mx.square_(), my.square_()
        num = (2 * mxy + c1).mul_(exy.sub_(mxy).mul_(2).add_(c2))                      # (2 mx my + C1)(2 sxy + C2)
        smap = num.div_((mx2 + my2 + c1).mul_(exx.sub_(mx2).add_(eyy.sub_(my2)).add_(c2)))  # / (..)(sxx + syy + C2)
        out.append(smap.flatten(1).double().mean(1))
    return torch.cat(out).numpy() if out else np.zeros(0)
