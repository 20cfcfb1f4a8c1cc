"""The verdict rule (stage/evaluate/verdicts.py) on constructed intervals, both directions of "better"."""

import pytest
from scipy.stats import binom

from stage.evaluate import verdicts


@pytest.mark.parametrize("metric, lo, hi, expected", [
    ("KID-proxy", -0.3, -0.1, "held"),          # a lower than b: better for KID
    ("KID-proxy", 0.1, 0.3, "contradicted"),
    ("KID-proxy", -0.1, 0.2, "inconclusive"),
    ("PSNR", 0.5, 2.0, "held"),                 # a higher than b: better for PSNR
    ("PSNR", -2.0, -0.5, "contradicted"),
    ("PSNR", -0.5, 2.0, "inconclusive"),
    ("SSIM", 0.0, 0.1, "inconclusive"),         # touching 0 does not exclude it
    ("FVD", -5.0, -1.0, "held"),
    ("FID-proxy", None, None, "inconclusive"),
])
def test_comparison_rule(metric, lo, hi, expected):
    assert verdicts.comparison(lo, hi, verdicts.better(metric)) == expected


def test_better_directions_and_unknown_metric():
    assert [verdicts.better(m) for m in ("KID", "KID-proxy", "FID", "FVD-proxy", "PSNR", "SSIM")] == \
        ["lower"] * 4 + ["higher"] * 2
    assert verdicts.better("temporal_mad_ratio") is None
    with pytest.raises(ValueError):
        verdicts.comparison(0.1, 0.2, None)


def test_clopper_pearson_is_exact():
    lo, hi = verdicts.clopper_pearson(3, 12, 0.95)
    # the defining property: P(X >= 3 | lo) = P(X <= 3 | hi) = 2.5 %
    assert binom.sf(2, 12, lo) == pytest.approx(0.025, rel=1e-6)
    assert binom.cdf(3, 12, hi) == pytest.approx(0.025, rel=1e-6)
    assert verdicts.clopper_pearson(0, 12, 0.95) == (0.0, pytest.approx(1 - 0.025 ** (1 / 12)))
    assert verdicts.clopper_pearson(12, 12, 0.95)[1] == 1.0


@pytest.mark.parametrize("surviving, n, scored_to, expected", [
    (12, 12, 600, "held"),
    (12, 12, 480, "inconclusive"),    # nobody collapsed, but nobody was scored to frame 600 either
    (0, 12, 600, "contradicted"),     # upper bound 1 - 0.025^(1/12) = 0.26 < 0.5
    (2, 12, 600, "contradicted"),     # upper bound 0.48
    (3, 12, 600, "inconclusive"),     # upper bound 0.57
    (0, 3, 600, "inconclusive"),      # 3 streams cannot contradict: upper bound 0.71
    (11, 12, 600, "inconclusive"),
])
def test_survival_rule(surviving, n, scored_to, expected):
    verdict, lo, hi = verdicts.survival(surviving, n, scored_to, 600, 0.5, 0.95)
    assert verdict == expected and 0 <= lo <= surviving / n <= hi <= 1


def test_rule_text_states_the_rule():
    text = verdicts.rule_text(0.95, 0.5, 2000, "stream")
    assert "excludes 0 on a's better side" in text and "Clopper-Pearson" in text and "2000" in text
