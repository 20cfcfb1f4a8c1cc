"""Kernel Inception Distance (or KID-proxy): an unbiased estimate of the squared MMD between two frame sets.

Every comparison here pairs frame i of one set with frame i of the other (the same frame index of a
generated stream and its ground truth; a real frame and its neighbour in the real floor). So the estimate
is the U-statistic over pairs z_i = (x_i, y_i) (Gretton et al. 2012, eq. 3):

    KID = 1/(m(m-1)) sum_{i!=j} [k(x_i, x_j) + k(y_i, y_j) - k(x_i, y_j) - k(x_j, y_i)]
    k(x, y) = (gamma x.y + 1)^3,  gamma = 1 / (D scale^2)

with the cubic polynomial kernel of Binkowski et al. 2018 (torchmetrics' poly_kernel, float64).
torchmetrics' KernelInceptionDistance (poly_mmd) keeps the i = j cross terms k(x_i, y_i) in its cross
term: unbiased for independent sets, but for paired ones it rewards the pairing, so an exact copy scores
-2 (mean k(x_i, x_i) - mean k(x_i, x_j)) / m < 0 instead of 0. Without them an exact copy scores 0, and
for independent sets the two estimators agree up to O(1/m) (tests/test_evaluate_kid.py). Unlike FID
the estimate has no bias in the sample size, so 40-frame segments compare with each other and with the
real floor of 20 frames; it can be slightly negative when the sets are alike.
`scale` divides the features (the proxy's FEATURE_SCALE, so the kernel sees O(1) dot products).
"""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics.image.kid import poly_kernel

DEGREE, COEF = 3, 1.0


def kid(x: np.ndarray, y: np.ndarray, scale: float = 1.0) -> float:
    """KID between paired features x (m, D) and y (m, D); NaN when m < 2."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"KID needs two (m, D) feature sets of one shape, got {x.shape} and {y.shape}")
    m = len(x)
    if m < 2:
        return float("nan")
    gamma = 1.0 / (x.shape[1] * scale ** 2)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    total = 0.0
    for a, b, sign in ((tx, tx, 1.0), (ty, ty, 1.0), (tx, ty, -2.0)):   # K_xy and K_yx have the same off-diagonal sum
        k = poly_kernel(a, b, DEGREE, gamma, COEF)
        total += sign * float(k.sum() - k.diagonal().sum())
    return total / (m * (m - 1))


def describe(scale: float) -> dict:
    """The kernel and estimator, for protocols."""
    return {"estimator": "U-statistic over index pairs, i != j (Gretton et al. 2012, eq. 3)",
            "kernel": "polynomial (torchmetrics poly_kernel)", "degree": DEGREE, "coef": COEF,
            "gamma": "1 / (D * scale^2)", "scale": scale}
