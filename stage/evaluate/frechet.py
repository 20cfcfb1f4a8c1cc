"""Frechet distance between Gaussians fitted to features, and the statistics files that hold them.

FID and FVD (and their proxies) are all the same number: fit N(mu, Sigma) to detector features of real
and generated samples, then

    d^2 = ||mu1 - mu2||^2 + tr(Sigma1 + Sigma2 - 2 (Sigma1 Sigma2)^(1/2))

computed in float64. The matrix square root uses scipy.linalg.sqrtm; when the product is singular
(fewer samples than feature dimensions) it retries with eps * I added to both covariances, and drops
the imaginary part that numerical error leaves (refusing when it is not negligible), as pytorch-fid does.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import linalg

from stage.errors import StageError

SQRTM_EPS = 1e-6          # added to the covariance diagonals when the product is (near) singular
IMAG_TOLERANCE = 1e-3     # largest |imaginary diagonal| of sqrtm accepted as numerical error,
                          # relative to its largest real diagonal entry (at least 1)


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


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = SQRTM_EPS) -> float:
    """Squared Frechet distance between N(mu1, sigma1) and N(mu2, sigma2) (the FID/FVD number)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape:
        raise ValueError(f"statistics differ in shape: {mu1.shape} vs {mu2.shape}, {s1.shape} vs {s2.shape}")
    diff = mu1 - mu2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)   # singular products are handled below
        covmean = linalg.sqrtm(s1 @ s2)
        if not np.isfinite(covmean).all():
            offset = np.eye(len(s1)) * eps
            covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        scale = max(1.0, float(np.abs(np.diagonal(covmean).real).max()))
        if np.abs(np.diagonal(covmean).imag).max() > IMAG_TOLERANCE * scale:
            raise ValueError(f"sqrtm has an imaginary component {np.abs(covmean.imag).max():.3g}")
        covmean = covmean.real
    value = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))
    return max(value, 0.0)    # tiny negative values are round-off of identical statistics


def distance(a: GaussianStats, b: GaussianStats) -> float:
    return frechet_distance(a.mu, a.sigma, b.mu, b.sigma)


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
