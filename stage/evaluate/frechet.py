"""Frechet distance between Gaussians fitted to features, and the statistics files that hold them.

FID and FVD (and their proxies) are all the same number: fit N(mu, Sigma) to detector features of real
and generated samples, then

    d^2 = ||mu1 - mu2||^2 + tr(Sigma1 + Sigma2 - 2 (Sigma1 Sigma2)^(1/2))

computed in float64 by torchmetrics' FID arithmetic (_compute_fid: tr((S1 S2)^(1/2)) as the sum of the
square roots of the eigenvalues of S1 S2, real part), which stays finite when the product is singular
(fewer samples than feature dimensions, as in a 40-frame segment). weighted_distance_batch is the same
formula over a batch of weightings of fixed feature sets: the bootstrap of pooled scores, where resample b
draws each stream's clips w times, is a weighting, not a new pass over features.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torchmetrics.image.fid import _compute_fid

from stage.errors import StageError

BATCH_BYTES = 1 << 27     # size of one chunk of batched covariance matrices (128 MiB)


@dataclass
class GaussianStats:
    """mu (D,) and sigma (D, D), float64, fitted to n feature vectors."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int
    info: dict = field(default_factory=dict)


def fit(features: np.ndarray) -> GaussianStats:
    """Mean and unbiased covariance of features (N, D); N >= 2."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"need at least 2 feature vectors of shape (N, D), got {x.shape}")
    return GaussianStats(x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False)), len(x))


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Squared Frechet distance between N(mu1, sigma1) and N(mu2, sigma2) (the FID/FVD number)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape:
        raise ValueError(f"statistics differ in shape: {mu1.shape} vs {mu2.shape}, {s1.shape} vs {s2.shape}")
    value = float(_compute_fid(*(torch.from_numpy(a) for a in (mu1, s1, mu2, s2))))
    return max(value, 0.0)    # tiny negative values are round-off of identical statistics


def distance(a: GaussianStats, b: GaussianStats) -> float:
    return frechet_distance(a.mu, a.sigma, b.mu, b.sigma)


def feature_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to features x and y; NaN when either has < 2 rows."""
    if len(x) < 2 or len(y) < 2:
        return float("nan")
    return distance(fit(x), fit(y))


def _trace_sqrt_product(c1: torch.Tensor, c2: torch.Tensor) -> torch.Tensor:
    """tr((c1 c2)^(1/2)) for batches of covariances. Where c1 (or else c2) is positive definite, c1 = L L^T
    (Cholesky) and the eigenvalues of c1 c2 are those of the symmetric L^T c2 L (eigvalsh, 3x cheaper than
    the general solver); elsewhere the general eigenvalues of c1 c2, as torchmetrics' _compute_fid takes them."""
    out = torch.empty(len(c1), dtype=c1.dtype)
    todo = torch.ones(len(c1), dtype=torch.bool)
    for a, b in ((c1, c2), (c2, c1)):
        idx = torch.nonzero(todo).flatten()
        if not len(idx):
            break
        low, info = torch.linalg.cholesky_ex(a[idx])
        ok = info == 0
        if ok.any():
            lk = low[ok]
            out[idx[ok]] = torch.linalg.eigvalsh(lk.transpose(-1, -2) @ b[idx[ok]] @ lk).clamp_min(0).sqrt().sum(-1)
            todo[idx[ok]] = False
    idx = torch.nonzero(todo).flatten()
    if len(idx):
        out[idx] = torch.linalg.eigvals(c1[idx] @ c2[idx]).sqrt().real.sum(-1)
    return out


def _weighted(x: torch.Tensor, w: torch.Tensor):
    """(N, mean, trace of the covariance) of B weightings w (B, n) of features x (n, D)."""
    n = w.sum(1)
    mu = (w @ x) / n[:, None]
    trace = (w @ x.square().sum(1) - n * mu.square().sum(1)) / (n - 1)
    return n, mu, trace


def _covariances(x: torch.Tensor, w: torch.Tensor, n: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """(B, D, D) weighted covariances: (sum_i w_i x_i x_i^T - N mu mu^T) / (N - 1), one GEMM over rows."""
    d = x.shape[1]
    second = (w @ (x[:, :, None] * x[:, None, :]).reshape(len(x), d * d)).reshape(len(w), d, d)
    return (second - n[:, None, None] * mu[:, :, None] * mu[:, None, :]) / (n - 1)[:, None, None]


def _cross(x1, w1, mu1, x2, w2, mu2) -> torch.Tensor:
    """K = Y_1 Y_2^T (B, n1, n2), Y the centred rows scaled by sqrt(weight), from the fixed X_1 X_2^T."""
    k = (x1 @ x2.T)[None] - (mu2 @ x1.T)[:, :, None] - (mu1 @ x2.T)[:, None, :] + \
        (mu1 * mu2).sum(1)[:, None, None]
    return k * w1.sqrt()[:, :, None] * w2.sqrt()[:, None, :]


def weighted_distance_batch(x1: np.ndarray, w1: np.ndarray, x2: np.ndarray, w2: np.ndarray) -> np.ndarray:
    """Frechet distances (B,) between weighted feature sets: features x (n, D) on each side, weights w (B, n)
    (how often resample b draws each row); NaN where a side weighs less than 2.

    The formula of torchmetrics' _compute_fid, batched. With Y the centred rows scaled by sqrt(weight),
    Sigma = Y^T Y / (N - 1), so the nonzero eigenvalues of Sigma_1 Sigma_2 are those of K K^T / ((N_1 - 1)
    (N_2 - 1)) with K = Y_1 Y_2^T (n_1 x n_2): when a side has fewer rows than dimensions (a few clips per
    segment, the real clips of a handful of scenes), that small symmetric eigenproblem replaces the D x D one."""
    x1, x2 = torch.from_numpy(np.asarray(x1, np.float64)), torch.from_numpy(np.asarray(x2, np.float64))
    w1, w2 = torch.from_numpy(np.asarray(w1, np.float64)), torch.from_numpy(np.asarray(w2, np.float64))
    out = np.full(len(w1), np.nan)
    ok = torch.nonzero((w1.sum(1) >= 2) & (w2.sum(1) >= 2)).flatten()
    d = x1.shape[1]
    small = min(len(x1), len(x2)) < d
    step = max(1, BATCH_BYTES // (8 * (len(x1) * len(x2) if small else d * d) * 3))
    for i in range(0, len(ok), step):
        j = ok[i:i + step]
        (n1, mu1, tr1), (n2, mu2, tr2) = _weighted(x1, w1[j]), _weighted(x2, w2[j])
        if small:
            k = _cross(x1, w1[j], mu1, x2, w2[j], mu2)
            sym = k @ k.transpose(1, 2) if len(x1) <= len(x2) else k.transpose(1, 2) @ k
            c = torch.linalg.eigvalsh(sym / ((n1 - 1) * (n2 - 1))[:, None, None]).clamp_min(0).sqrt().sum(-1)
        else:
            c = _trace_sqrt_product(_covariances(x1, w1[j], n1, mu1), _covariances(x2, w2[j], n2, mu2))
        out[j.numpy()] = np.maximum(((mu1 - mu2).square().sum(-1) + tr1 + tr2 - 2 * c).numpy(), 0.0)
    return out


def save_stats(path: str | Path, stats: dict[str, GaussianStats], info: dict) -> None:
    """Write named statistics (e.g. all / subset_a / subset_b) and their protocol to one .npz, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"info_json": np.array(json.dumps(info, sort_keys=True))}
    for key, s in stats.items():
        arrays[f"{key}_mu"], arrays[f"{key}_sigma"], arrays[f"{key}_n"] = s.mu, s.sigma, np.array(s.n)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def load_stats(path: str | Path, fix: str = "delete it to recompute") -> tuple[dict[str, GaussianStats], dict]:
    """Inverse of save_stats: ({name: GaussianStats}, info); StageError naming the file (ending in `fix`)
    when it is damaged or its arrays do not form Gaussian statistics."""
    try:
        with np.load(path, allow_pickle=False) as data:
            info = json.loads(str(data["info_json"]))
            keys = sorted({k[:-3] for k in data.files if k.endswith("_mu")})
            stats = {k: GaussianStats(data[f"{k}_mu"].astype(np.float64), data[f"{k}_sigma"].astype(np.float64),
                                      int(data[f"{k}_n"]), info) for k in keys}
    except Exception as exc:  # zipfile, numpy and json each raise their own errors for damaged files
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        raise StageError(f"{path}: not a readable statistics file ({detail}); {fix}") from exc
    problem = _stats_problem(stats, info)
    if problem:
        raise StageError(f"{path}: {problem}; {fix}")
    return stats, info


def _stats_problem(stats: dict[str, GaussianStats], info) -> str | None:
    if not isinstance(info, dict):
        return "its info_json is not a JSON object"
    if "all" not in stats:
        return "it holds no 'all' statistics"
    for key, s in stats.items():
        d = s.mu.shape[0] if s.mu.ndim == 1 else -1
        if d < 1 or s.sigma.shape != (d, d) or s.n < 2:
            return f"its {key!r} statistics have mu {s.mu.shape}, sigma {s.sigma.shape}, n {s.n}"
        if not (np.isfinite(s.mu).all() and np.isfinite(s.sigma).all()):
            return f"its {key!r} statistics are not finite"
    return None
