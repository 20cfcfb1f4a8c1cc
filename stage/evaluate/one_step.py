"""One-step quality: teacher-forced runs (frame t conditioned on the REAL latent of frame t-1) scored on
their frames [first, end) against the real frames, next to persistence and the ceiling on the same frames.

This separates how good one generated frame is from how errors compound over a free rollout: a variant
that is good here but drifts in its rollouts has an exposure-bias problem, not a quality problem.
metrics.json "one_step": {<variant> | "persistence" | "ceiling": {<metric>: {"mean", "ci_low", "ci_high"},
"frames": scored frames per stream, "streams": n, "frame_range": [first, end]}}.
"""

from __future__ import annotations

from stage.evaluate import bootstrap, drift
from stage.evaluate.table import Row, ScoreTable

METRICS = ("PSNR", "SSIM", "KID")


def assess(videos: dict[str, dict], streams: list, ends: dict, reals: dict, refs: dict[str, Row], first: int,
           kid_scale: float, display: dict, boot: dict, groups: list) -> dict:
    """`videos`: {variant: {stream: VideoScores}}; refs: persistence / ceiling rows (per scene)."""
    rows = [Row(v, "generated", (lambda st, vid=vid: vid[st])) for v, vid in sorted(videos.items())]
    rows += list(refs.values())
    overall = drift.Range("overall", 0, first, None, 1)
    table = ScoreTable(rows, streams, ends, reals, [overall], clip_frames=1, kid_scale=kid_scale, pooled=False)
    table.compute()
    table.resample(bootstrap.counts(groups, boot["resamples"], boot["seed"]), boot["level"])
    out = {}
    for row in rows:
        entry = {}
        for m in METRICS:
            s = table.summary(row.name, "overall", m)
            if s is not None:
                entry[display[m]] = {k: s[k] for k in ("mean", "ci_low", "ci_high")}
        entry.update(frames=min(ends.values()) - first, streams=len(streams), frame_range=[first, max(ends.values())])
        out[row.name] = entry
    return out
