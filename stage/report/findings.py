"""Plain-language findings computed from the numbers: where a variant loses to the still photograph (the
first real frame, repeated) in the free rollouts, or to persistence (the previous real frame) in one-step
quality. A video model that cannot beat a frozen frame has learned little; the report states it in words
at the top, so that such a result cannot be missed."""

from __future__ import annotations

from dataclasses import dataclass

from stage.formats.metrics import Metrics, higher_is_better, paired_segments
from stage.report.tables import frames_label, interval

STILL, PERSISTENCE = "still_photograph", "persistence"
STILL_WORDS = "the still photograph (the first real frame, repeated)"
PERSISTENCE_WORDS = "persistence (the previous real frame, repeated)"


@dataclass
class Loss:
    """One place where a variant scores worse than a baseline."""

    metric: str
    frames: tuple[int, int] | None  # the segment; None for one-step quality
    value: dict
    baseline: dict
    clear: bool  # the variant's whole 95% interval lies on the worse side of the baseline's mean


def _loss(metric: str, frames, v: dict | None, b: dict | None) -> Loss | None:
    if not v or not b or v["mean"] is None or b["mean"] is None:
        return None
    up = higher_is_better(metric)
    if not (v["mean"] < b["mean"] if up else v["mean"] > b["mean"]):
        return None
    edge = v["ci_high"] if up else v["ci_low"]
    clear = edge is not None and (edge < b["mean"] if up else edge > b["mean"])
    return Loss(metric, frames, v, b, clear)


def compared_metrics(m: Metrics) -> list[str]:
    return ["PSNR", m.kid]


def segment_losses(m: Metrics, variant: str, metric: str) -> tuple[list[Loss], int]:
    """(segments where `variant` is worse than the still photograph on `metric`, segments compared)."""
    pairs = paired_segments(m.variants[variant]["segments"].get(metric, []),
                            m.variants[STILL]["segments"].get(metric, []))
    return [loss for e, b in pairs if (loss := _loss(metric, (e["start"], e["end"]), e, b))], len(pairs)


def one_step_losses(m: Metrics, variant: str) -> list[Loss]:
    """Metrics on which `variant`'s teacher-forced frames are worse than persistence's."""
    mine, base = m.one_step[variant]["metrics"], m.one_step[PERSISTENCE]["metrics"]
    return [loss for x in compared_metrics(m) if (loss := _loss(x, None, mine.get(x), base.get(x)))]


def _loss_sentences(m: Metrics) -> list[str]:
    """One sentence per variant and metric where it loses to a frozen-frame baseline (and a missing baseline)."""
    out = []
    if STILL not in m.variants:
        out.append("metrics.json has no still-photograph baseline: whether the variants beat a frozen frame "
                   "was not measured.")
    else:
        for v in m.generated():
            for metric in compared_metrics(m):
                losses, n = segment_losses(m, v, metric)
                if not n:  # an all-clear must not rest on no comparison at all
                    out.append(f"{v}: no segment has {metric} for both it and the still photograph, so whether "
                               "it beats a frozen frame there was not measured.")
                elif losses:
                    clear = sum(x.clear for x in losses)
                    out.append(f"{v} loses to {STILL_WORDS} on {metric} in {len(losses)} of {n} segments: frames "
                               + ", ".join(frames_label(*x.frames) for x in losses)
                               + f" ({clear} of them with the variant's whole 95% interval worse than the still "
                                 "photograph's mean).")
    one_step = [v for v in m.generated() if v in m.one_step] if PERSISTENCE in m.one_step else []
    for v in one_step:
        for x in one_step_losses(m, v):
            out.append(f"In one-step (teacher-forced) quality, {v} loses to {PERSISTENCE_WORDS} on {x.metric}: "
                       f"{interval(x.value)} vs {interval(x.baseline)}"
                       + (" (the variant's whole 95% interval is worse)." if x.clear else "."))
    return out


def statements(m: Metrics) -> list[str]:
    """The losses in words, or one all-clear sentence when there are none."""
    if out := _loss_sentences(m):
        return out
    one_step = PERSISTENCE in m.one_step and any(v in m.one_step for v in m.generated())
    return [f"Every variant does at least as well as {STILL_WORDS} on {' and '.join(compared_metrics(m))} in every "
            "segment" + (f", and at least as well as {PERSISTENCE_WORDS} in one-step quality." if one_step else ".")]


def loses(m: Metrics) -> bool:
    """Whether the box is a warning: some variant loses to a frozen frame, or that was not measured."""
    return bool(_loss_sentences(m))
