"""The claims fixed in evaluate.claims, checked on the scored table: one entry per claim x comparison x
metric (verdicts.py holds the rule).

    kind improves: comparisons [[a, b], ...] ("a improves on b"), metrics, frames [start, end) (0-based,
                   end exclusive; every stream must be scored to `end`)
    kind survives: comparisons [[v], ...] ("v runs `end` frames without collapse"), frames [0, end)

A claim whose variants were not rolled out, or whose frames are not scored, is listed in claims_skipped
with the reason, never silently dropped.
"""

from __future__ import annotations

from stage.errors import StageError
from stage.evaluate import drift, verdicts


def check(claims: list[dict]) -> list[dict]:
    """The claims, their shape checked beyond the schema (pairs for improves, singles for survives)."""
    for i, c in enumerate(claims):
        where = f"evaluate.claims[{i}] ({c['claim']!r})"
        want = 2 if c["kind"] == "improves" else 1
        for j, comp in enumerate(c["comparisons"]):
            if len(comp) != want:
                raise StageError(f"{where}: comparisons[{j}] is {comp}; a claim of kind {c['kind']} compares "
                                 f"{'[a, b] (a improves on b)' if want == 2 else '[variant]'}")
        lo, hi = c["frames"]
        if not lo < hi:
            raise StageError(f"{where}: frames {c['frames']} must be [start, end) with start < end")
    return claims


def ranges(claims: list[dict], first: int, horizon: int, clip_stride: int) -> list[drift.Range]:
    """The frame ranges the improves-claims need that the streams are scored on."""
    out = {}
    for c in claims:
        lo, hi = c["frames"]
        if c["kind"] == "improves" and hi <= horizon:
            key = range_key(lo, hi)
            out[key] = drift.Range(key, lo, max(lo, first), hi, clip_stride)
    return list(out.values())


def range_key(lo: int, hi: int) -> str:
    return f"frames {lo}-{hi}"


def assess(claims: list[dict], table, present: set[str], display: dict[str, str], survival: dict[str, dict],
           horizon: int, share: float, level: float) -> tuple[list[dict], list[dict]]:
    """(claims entries, claims_skipped entries). survival[row] = {"surviving", "n", "scored_to"}."""
    entries, skipped = [], []
    for c in claims:
        lo, hi = c["frames"]
        for comp in c["comparisons"]:
            text = " vs ".join(comp)
            missing = [v for v in comp if v not in present]
            metrics = ["survival"] if c["kind"] == "survives" else c["metrics"]
            if missing:
                skipped += [{"claim": c["claim"], "comparison": text, "metric": display.get(m, m),
                             "reason": f"no rollouts of {', '.join(missing)}"} for m in metrics]
                continue
            if c["kind"] == "survives":
                s = survival[comp[0]]
                verdict, ci_lo, ci_hi = verdicts.survival(s["surviving"], s["n"], s["scored_to"], hi, share, level)
                entries.append({"claim": c["claim"], "comparison": text, "a": comp[0], "b": None, "metric": "survival",
                                "frames": [lo, hi], "better": "higher", "effect": s["surviving"] / max(s["n"], 1),
                                "ci_low": ci_lo, "ci_high": ci_hi, "verdict": verdict, "n_streams": s["n"],
                                "surviving": s["surviving"], "scored_frames": s["scored_to"],
                                "interval": "clopper-pearson"})
                continue
            for m in metrics:
                name = display.get(m, m)
                diff = table.difference(comp[0], comp[1], range_key(lo, hi), m) if hi <= horizon else None
                if diff is None:
                    reason = (f"frames {lo}-{hi} are not scored: the streams are scored to frame {horizon}"
                              if hi > horizon else f"{name} has no value on both sides of frames {lo}-{hi}")
                    skipped.append({"claim": c["claim"], "comparison": text, "metric": name, "reason": reason})
                    continue
                direction = verdicts.better(m)
                entries.append({"claim": c["claim"], "comparison": text, "a": comp[0], "b": comp[1], "metric": name,
                                "frames": [lo, hi], "better": direction, **diff,
                                "verdict": verdicts.comparison(diff["ci_low"], diff["ci_high"], direction),
                                "interval": "paired bootstrap percentile"})
    return entries, skipped
