"""KID (stage/evaluate/kid.py) against a brute-force reference and torchmetrics' KernelInceptionDistance."""

import numpy as np
import pytest
import torch
from torchmetrics.image.kid import KernelInceptionDistance

from stage.evaluate.backbones import FEATURE_SCALE, proxy_frame_net
from stage.evaluate.kid import kid


def _brute_force(x, y, scale=1.0):
    """The U-statistic over index pairs, term by term."""
    m, d = x.shape
    k = lambda a, b: (a @ b / (d * scale ** 2) + 1.0) ** 3  # noqa: E731
    total = 0.0
    for i in range(m):
        for j in range(m):
            if i != j:
                total += k(x[i], x[j]) + k(y[i], y[j]) - k(x[i], y[j]) - k(x[j], y[i])
    return total / (m * (m - 1))


def test_matches_brute_force():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(9, 5)), rng.normal(0.5, 1.3, size=(9, 5))
    assert kid(x, y) == pytest.approx(_brute_force(x, y), rel=1e-12)
    big_x, big_y = 100 * x, 100 * y + 30
    assert kid(big_x, big_y, scale=100.0) == pytest.approx(_brute_force(big_x, big_y, scale=100.0), rel=1e-12)
    assert kid(big_x, big_y, scale=100.0) == pytest.approx(kid(x, y + 0.3), rel=1e-12)   # scale undoes the features'


def test_copy_scores_zero_and_shift_positive_and_symmetric():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 8))
    assert kid(x, x) == 0.0                     # torchmetrics' estimator would give -2 (D - A) / m here
    shifted = x + 2.0
    assert kid(x, shifted) > 0.1
    assert kid(x, shifted) == pytest.approx(kid(shifted, x), rel=1e-12)
    assert np.isnan(kid(x[:1], x[:1]))
    with pytest.raises(ValueError):
        kid(x, x[:-1])


class _Flat(torch.nn.Module):
    """Proxy features of (N, 3, H, W) uint8 images, as torchmetrics' custom feature module."""

    def __init__(self):
        super().__init__()
        self.net = proxy_frame_net(0)

    def forward(self, x):
        return self.net(x.float() * (2 / 255) - 1) / FEATURE_SCALE


@pytest.mark.filterwarnings("ignore:Metric `Kernel Inception Distance` will save")
def test_agrees_with_torchmetrics_kid_on_independent_sets():
    # independent images: the two estimators differ only by the i = j cross terms, O(1/m)
    rng = np.random.default_rng(2)
    real = torch.from_numpy(rng.integers(0, 256, (60, 3, 32, 48), dtype=np.uint8))
    fake = torch.from_numpy(np.clip(rng.normal(150, 60, (60, 3, 32, 48)), 0, 255).astype(np.uint8))
    metric = KernelInceptionDistance(feature=_Flat(), subsets=1, subset_size=60)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    reference = float(metric.compute()[0])
    f = _Flat()
    with torch.no_grad():
        ours = kid(f(fake).double().numpy(), f(real).double().numpy())
    assert reference > 0 and ours == pytest.approx(reference, rel=0.01)
