"""The report's tables as plain data (header, rows of strings), built from metrics.json: the PDF, the
HTML table of Snakemake's report and the tests all read these same rows."""

from __future__ import annotations

import csv
import io
import statistics
from pathlib import Path
from xml.sax.saxutils import escape

from stage.atomic import write_text
from stage.formats.metrics import ONE_STEP_REFERENCES, Metrics, higher_is_better
from stage.report.pdf import fmt

DASH = "\u2014"


def frames_label(start: int, end: int) -> str:
    """[start, end) as the report prints frame ranges: 0-based, inclusive ("480-599")."""
    return f"{start}\u2013{end - 1}"


def interval(entry: dict | None) -> str:
    """'mean [ci_low, ci_high]', or a dash where there is no number."""
    if not entry or entry.get("mean") is None:
        return DASH
    if entry.get("ci_low") is None or entry.get("ci_high") is None:
        return fmt(entry["mean"])
    return f"{fmt(entry['mean'])} [{fmt(entry['ci_low'])}, {fmt(entry['ci_high'])}]"


def metric_header(metric: str) -> str:
    return f"{metric} ({'higher' if higher_is_better(metric) else 'lower'} better)"


VERDICT_HEADER = ["claim", "comparison", "metric, frames", "effect [95% CI]", "streams", "verdict"]


def verdict_rows(m: Metrics) -> list[list[str]]:
    """One row per pre-registered claim: what is compared on which metric and frames, the effect, its
    interval and the verdict the evaluation's rule gave."""
    rows = []
    for c in m.claims:
        comparison = c["comparison"] or (f"{c['a']} vs {c['b']}" if c["b"] else c["a"])
        where = c["metric"] + (f", frames {frames_label(*c['frames'])}" if c["frames"] else "")
        better = c["better"] or ("higher" if higher_is_better(c["metric"]) else "lower")
        effect = DASH if c["effect"] is None else fmt(c["effect"])
        if c["ci_low"] is not None and c["ci_high"] is not None:
            effect += f" [{fmt(c['ci_low'])}, {fmt(c['ci_high'])}]"
        rows.append([c["claim"], comparison, f"{where} ({better} is better)", effect,
                     DASH if c["n_streams"] is None else str(c["n_streams"]), c["verdict"]])
    return rows


def _rows(m: Metrics) -> list[str]:
    return m.generated() + m.baselines()


def metrics_table(m: Metrics, window: tuple[int, int] | None = None) -> tuple[list[str], list[list[str]]]:
    """Every variant and baseline x every metric, 'mean [95% CI]', over all scored frames or one window."""
    metrics = m.metric_names()
    header = ["row", "kind", "streams"] + [metric_header(x) for x in metrics]
    rows = []
    for name in _rows(m):
        e = m.variants[name]
        cells = [interval(e["overall"].get(x) if window is None else m.window(name, x, *window)) for x in metrics]
        rows.append([m.label(name), e["kind"], DASH if e["streams"] is None else str(e["streams"])] + cells)
    return header, rows


def collapse_points(m: Metrics, name: str) -> list[tuple[int, bool]]:
    """(time to collapse, collapsed?) per stream: a value at or past the rollout length is "no collapse"."""
    return [(t, t < m.horizon) for t in m.variants[name]["time_to_collapse"]]


def collapse_table(m: Metrics) -> tuple[list[str], list[list[str]]]:
    header = ["variant", "streams", "collapsed", "earliest collapse (frame)", "median time to collapse (frames)"]
    rows = []
    for name in m.generated():
        pts = collapse_points(m, name)
        times = [t for t, _ in pts]
        hit = [t for t, c in pts if c]
        median = fmt(float(statistics.median(times))) if times else DASH
        rows.append([name, str(len(pts)), f"{len(hit)} of {len(pts)}", str(min(hit)) if hit else "none",
                     median + (f" (no collapse = {m.horizon})" if times and not hit else "")])
    return header, rows


GATE_COLUMNS = {  # gate: (column title with {limit}, unit of its value)
    "one_step_psnr": ("one-step PSNR below persistence (target <= {limit} dB)", " dB"),
    "one_step_kid": ("one-step KID / AE ceiling (target <= {limit}x)", "x"),
    "beats_still_photograph": ("segments not above the still photograph on PSNR (target {limit})", ""),
    "no_collapse": ("streams that collapse or drift (target {limit})", ""),
}


def gate_table(m: Metrics) -> tuple[list[str], list[list[str]]]:
    """One row per variant, one column per gate: its value and whether the target is met."""
    by = {(g["variant"], g["gate"]): g for g in m.gates}
    limits = {g["gate"]: g["limit"] for g in m.gates}
    gates = [g for g in GATE_COLUMNS if g in limits]
    header = ["variant"] + [GATE_COLUMNS[g][0].format(limit=fmt(limits[g])) for g in gates]
    rows = []
    listed, generated = dict.fromkeys(g["variant"] for g in m.gates), m.generated()
    for v in [v for v in generated if v in listed] + [v for v in listed if v not in generated]:
        row = [v]
        for g in gates:
            e = by.get((v, g))
            if e is None or e["met"] is None:
                row.append("not measured" + (f": {e['detail']}" if e and e["detail"] else ""))
            else:
                row.append(f"{fmt(e['value'])}{GATE_COLUMNS[g][1]}: {'met' if e['met'] else 'missed'}")
        rows.append(row)
    return header, rows


def one_step_table(m: Metrics) -> tuple[list[str], list[list[str]]]:
    """Teacher-forced quality: each frame generated from the real previous frame."""
    metrics = [x for x in m.metric_names() if any(x in e["metrics"] for e in m.one_step.values())]
    metrics += sorted({x for e in m.one_step.values() for x in e["metrics"]} - set(metrics))
    header = ["row", "frames", "streams"] + [metric_header(x) for x in metrics]
    refs = [b for b in ONE_STEP_REFERENCES if b in m.one_step]
    order = [v for v in m.generated() if v in m.one_step] + refs
    order += sorted(set(m.one_step) - set(order))
    rows = []
    for name in order:
        e = m.one_step[name]
        counts = [DASH if e[k] is None else str(e[k]) for k in ("frames", "streams")]
        rows.append([m.label(name) if name in m.variants else name, *counts,
                     *(interval(e["metrics"].get(x)) for x in metrics)])
    return header, rows


CSV_COLUMNS = ("row", "kind", "frames", "metric", "mean", "ci_low", "ci_high", "n_streams")


def long_rows(m: Metrics) -> list[dict]:
    """The metrics tables in long form (one number per line): results/figures/metrics_table.csv."""
    out = []
    for name in _rows(m):
        e = m.variants[name]
        for metric in m.metric_names():
            picks = [("all", e["overall"].get(metric))]
            picks += [(f"{s}-{t}", m.window(name, metric, s, t)) for s, t in m.claim_windows()]
            for frames, entry in picks:
                if entry:
                    out.append({"row": name, "kind": e["kind"], "frames": frames, "metric": metric,
                                **{k: entry.get(k) for k in ("mean", "ci_low", "ci_high", "n_streams")}})
    return out


def write_csv(m: Metrics, out: Path) -> Path:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(long_rows(m))
    return write_text(out, buf.getvalue())


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_html(m: Metrics, statements: list[str], out: Path) -> Path:
    """The verdicts, the plain-language findings and the metrics tables as one page (Snakemake's report
    shows HTML results inline; a CSV would only be a download)."""
    parts = ["<h3>Read this first</h3><ul>" + "".join(f"<li>{escape(s)}</li>" for s in statements) + "</ul>"]
    if m.claims:
        parts.append("<h3>Claims</h3>" + _html_table(VERDICT_HEADER, verdict_rows(m)))
    if m.gates:
        parts.append("<h3>Gates</h3>" + _html_table(*gate_table(m)))
    parts.append("<h3>All scored frames</h3>" + _html_table(*metrics_table(m)))
    for w in m.claim_windows():
        parts.append(f"<h3>Frames {frames_label(*w)}</h3>" + _html_table(*metrics_table(m, w)))
    parts.append("<h3>Time to collapse</h3>" + _html_table(*collapse_table(m)))
    if m.one_step:
        parts.append("<h3>One-step (teacher-forced) quality</h3>" + _html_table(*one_step_table(m)))
    style = ("body{font-family:sans-serif;font-size:13px} table{border-collapse:collapse;margin-bottom:1em} "
             "td,th{border:1px solid #bbb;padding:2px 6px;text-align:right} td:first-child{text-align:left}")
    return write_text(out, f"<!doctype html><html><head><meta charset=\"utf-8\"><title>Metrics</title>"
                           f"<style>{style}</style></head><body>{''.join(parts)}<p>Values: mean [95% bootstrap "
                           f"interval]. Frame ranges are 0-based and inclusive.</p></body></html>\n")
