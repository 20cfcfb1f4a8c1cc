"""Verdicts on the claims, by a rule fixed here and in the config (evaluate.claims, evaluate.verdict)
before any number is seen.

"a improves on b" on a metric with a known better direction (BETTER): held when the paired bootstrap
interval of (a - b) excludes 0 on a's better side, contradicted when it excludes 0 on the other side,
inconclusive otherwise.

"v runs N frames without collapse": held when every stream of v is scored to frame N and none collapses;
contradicted when the upper end of the two-sided Clopper-Pearson interval (at the bootstrap level) of the
share of surviving streams is below evaluate.verdict.survival_share; inconclusive otherwise.
"""

from __future__ import annotations

from scipy.stats import beta

BETTER = {"KID": "lower", "FID": "lower", "FVD": "lower", "PSNR": "higher", "SSIM": "higher",
          "survival": "higher"}
VERDICTS = ("held", "contradicted", "inconclusive")


def better(metric: str) -> str | None:
    """'lower' / 'higher' for a metric name (KID-proxy and KID alike), None for metrics without one."""
    return BETTER.get(metric.removesuffix("-proxy"))


def comparison(ci_low: float | None, ci_high: float | None, direction: str) -> str:
    """Verdict on "a improves on b" from the interval of (a - b)."""
    if ci_low is None or ci_high is None:
        return "inconclusive"
    if direction not in ("lower", "higher"):
        raise ValueError(f"unknown better direction {direction!r}")
    good, bad = (ci_high < 0, ci_low > 0) if direction == "lower" else (ci_low > 0, ci_high < 0)
    return "held" if good else "contradicted" if bad else "inconclusive"


def clopper_pearson(k: int, n: int, level: float) -> tuple[float, float]:
    """Exact two-sided interval of a binomial share k / n."""
    if n < 1:
        return 0.0, 1.0
    alpha = 1 - level
    lo = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return lo, hi


def survival(surviving: int, n: int, scored_to: int, frames_end: int, share: float,
             level: float) -> tuple[str, float, float]:
    """(verdict, ci_low, ci_high) of "no stream collapses before frame frames_end"; scored_to is the
    shortest scored length among the streams (a stream scored to fewer frames cannot show it holds)."""
    lo, hi = clopper_pearson(surviving, n, level)
    if n and surviving == n and scored_to >= frames_end:
        return "held", lo, hi
    if hi < share:
        return "contradicted", lo, hi
    return "inconclusive", lo, hi


def rule_text(level: float, share: float, resamples: int, unit: str) -> str:
    """The rule in words (metrics.json "verdict_rule")."""
    return (f"A comparison 'a improves on b' on a metric with a known better direction (lower for KID, FID, "
            f"FVD; higher for PSNR, SSIM) is held when the paired {level:.0%} bootstrap percentile interval of "
            f"(a - b) ({resamples} resamples of whole {unit}s, the same {unit}s on both sides) excludes 0 on a's "
            f"better side, contradicted when it excludes 0 on the other side, and inconclusive otherwise. "
            f"'v runs N frames without collapse' is held when every stream of v is scored to frame N and none "
            f"collapses (collapse: see 'collapse'), contradicted when the upper end of the two-sided {level:.0%} "
            f"Clopper-Pearson interval of the share of surviving streams is below {share}, and inconclusive "
            f"otherwise.")
