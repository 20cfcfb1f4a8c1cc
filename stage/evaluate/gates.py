"""Acceptance gates of the per-frame model and of the rollouts, judged on the evaluation's own summaries with
thresholds fixed in `evaluate.gates` before any number is seen. A claim asks whether one variant beats
another; a gate asks whether a variant works at all:

- one_step_psnr: teacher-forced PSNR within `one_step_psnr_gap_db` of persistence (the previous real frame);
- one_step_kid: teacher-forced KID at most `one_step_kid_over_ceiling` times the autoencoder ceiling's;
- beats_still_photograph: a higher mean paired PSNR than the still photograph in every segment (the streams
  are the same on both sides, so the difference of the means is the mean paired difference);
- no_collapse: every stream reaches the last frame without collapse and with a drift ratio (KID of the last
  segment over the first) of at most `drift_ratio_max` (a stream without a ratio is judged on collapse alone).

`met` is None where a gate could not be measured (a missing baseline, a ceiling KID that is not positive);
`detail` says why, or what the value is made of.
"""

from __future__ import annotations

import math

from stage.formats.metrics import paired_segments

STILL, PERSISTENCE, CEILING = "still_photograph", "persistence", "ceiling"


def _entry(gate: str, variant: str, value, limit: float, met: bool | None, detail: str) -> dict:
    finite = value is not None and math.isfinite(value)
    return {"gate": gate, "variant": variant, "value": float(value) if finite else None, "limit": float(limit),
            "met": met if finite else None, "detail": detail}


def _mean(entry: dict | None) -> float | None:
    return None if not entry or entry.get("mean") is None else float(entry["mean"])


def one_step_psnr(one: dict, variant: str, limit: float) -> dict:
    mine, base = _mean(one.get(variant, {}).get("PSNR")), _mean(one.get(PERSISTENCE, {}).get("PSNR"))
    if mine is None or base is None:
        return _entry("one_step_psnr", variant, None, limit, None, "no one-step PSNR for it or for persistence")
    gap = base - mine
    return _entry("one_step_psnr", variant, gap, limit, gap <= limit,
                  f"persistence {base:.2f} dB - {variant} {mine:.2f} dB")


def one_step_kid(one: dict, variant: str, kid: str, limit: float) -> dict:
    mine, ceiling = _mean(one.get(variant, {}).get(kid)), _mean(one.get(CEILING, {}).get(kid))
    if mine is None or ceiling is None:
        return _entry("one_step_kid", variant, None, limit, None, f"no one-step {kid} for it or for the ceiling")
    if ceiling <= 0:
        return _entry("one_step_kid", variant, None, limit, None,
                      f"the ceiling's {kid} is {ceiling:.3g}: no ratio to it")
    ratio = mine / ceiling
    return _entry("one_step_kid", variant, ratio, limit, ratio <= limit,
                  f"{variant} {mine:.3g} / ceiling {ceiling:.3g}")


def beats_still_photograph(variants: dict, variant: str) -> dict:
    pairs = paired_segments(variants[variant]["segments"].get("PSNR", []),
                            variants.get(STILL, {}).get("segments", {}).get("PSNR", []))
    if not pairs:
        return _entry("beats_still_photograph", variant, None, 0, None,
                      "no segment scored for it and the still photograph")
    # 0-based, inclusive, as the report prints ranges
    lost = [f"{e['start']}-{e['end'] - 1}" for e, b in pairs if e["mean"] <= b["mean"]]
    detail = f"loses {len(lost)} of {len(pairs)} segments" + (f" (frames {', '.join(lost)})" if lost else "")
    return _entry("beats_still_photograph", variant, len(lost), 0, not lost, detail)


def no_collapse(variants: dict, variant: str, horizon: int, limit: float) -> dict:
    e = variants[variant]
    if not e["collapsed"]:
        return _entry("no_collapse", variant, None, 0, None, "no stream scored")
    # no ratio (drift.drift_ratio) where the first segment's KID is not positive: nothing there to drift from
    drifted = [r is not None and r > limit for r in e["drift_ratio"]]
    failing = sum(c or d for c, d in zip(e["collapsed"], drifted))
    return _entry("no_collapse", variant, failing, 0, failing == 0,
                  f"{sum(e['collapsed'])} of {len(e['collapsed'])} streams collapse before frame {horizon}; "
                  f"{sum(drifted)} drift past a ratio of {limit:g}; {e['drift_ratio'].count(None)} have no drift ratio")


def assess(variants: dict, one: dict, horizon: int, kid: str, cfg: dict) -> list[dict]:
    """One entry per generated variant and gate (see the module docstring), in formats.metrics.GATES order."""
    out = []
    for v in (name for name, e in variants.items() if e["kind"] == "generated"):
        out += [one_step_psnr(one, v, cfg["one_step_psnr_gap_db"]),
                one_step_kid(one, v, kid, cfg["one_step_kid_over_ceiling"]),
                beats_still_photograph(variants, v),
                no_collapse(variants, v, horizon, cfg["drift_ratio_max"])]
    return out
