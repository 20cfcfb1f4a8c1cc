"""results/metrics.json and the evaluation's CSV tables: what `stage evaluate` writes and the report reads.

metrics.json is format version 2 (FORMAT_VERSION, its "format_version" field): every variant and reference
row scored on the same streams, with bootstrap intervals and the verdicts on the claims. Its schema is
stage/schemas/metrics.schema.yaml (docs/metrics-schema.md explains each key); every file is checked against
it before it is written (check, write) and a reader refuses another format version (load). Beside it, in
results/evaluation/:

    segments.csv      SEGMENT_COLUMNS: per variant, segment and metric, the mean and its 95% interval
    streams.csv       STREAM_COLUMNS: per variant, stream, segment and metric, the stream's value
    differences.csv   DIFFERENCE_COLUMNS: per pair of rows, range and metric, the effect and its interval

metrics.json is written last, through a hidden temporary renamed into place: a folder whose metrics.json
exists holds a complete evaluation. Non-finite numbers become null (JSON has no NaN), and None again when
read. The reader checks every field the report uses once, so an old or damaged file is one StageError line
that names the field, never a KeyError inside a figure.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import numpy as np
import yaml

from stage.atomic import write_text
from stage.config import SCHEMA_DIR
from stage.errors import StageError
from stage.readback import field, read_json

FORMAT_VERSION = 2
SCHEMA_PATH = SCHEMA_DIR / "metrics.schema.yaml"
# the part of segments.csv the report draws; the rest names the score and its protocol
SEGMENT_SUMMARY = ("variant", "segment_start", "segment_end", "metric", "mean", "ci_low", "ci_high")
SEGMENT_COLUMNS = (*SEGMENT_SUMMARY, "n_streams", "name", "protocol_hash")
STREAM_COLUMNS = ("variant", "scene", "seed", "segment_start", "segment_end", "metric", "value")
DIFFERENCE_COLUMNS = ("a", "b", "range", "segment_start", "segment_end", "metric", "better", "effect", "ci_low",
                      "ci_high", "n_streams")


# ---- writing ---------------------------------------------------------------------------------------------
def clean(obj):
    """JSON-ready copy: numpy scalars to Python, non-finite floats to None, tuples to lists."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [clean(v) for v in obj.tolist()]
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    return obj


def schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def check(result: dict) -> None:
    """RuntimeError when `result` breaks the documented schema (a bug here, never the user's input)."""
    errors = sorted(jsonschema.Draft202012Validator(schema()).iter_errors(result), key=lambda e: list(e.path))
    if errors:
        e = errors[0]
        where = "/".join(str(p) for p in e.path) or "(top level)"
        raise RuntimeError(f"metrics.json breaks {SCHEMA_PATH} at {where}: {e.message}")


def csv_text(columns, rows) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in clean(row).items()})
    return buf.getvalue()


def write(result: dict, metrics_path: Path, tables: dict[Path, tuple]) -> dict:
    """Write the CSV tables ({path: (columns, rows)}), then metrics.json; return the cleaned result."""
    result = clean(result)
    check(result)
    for path, (columns, rows) in tables.items():
        write_text(path, csv_text(columns, rows))
    write_text(metrics_path, json.dumps(result, indent=1))
    return result


# ---- reading ---------------------------------------------------------------------------------------------
FIX = "re-run `stage evaluate` (Snakemake rule `evaluate`)"
GENERATED_ORDER = ("full", "no_htft", "stages_1_2", "stage1_only", "no_htft_1_2")
BASELINE_LABELS = {"still_photograph": "still photograph", "persistence": "persistence",
                   "ceiling": "AE ceiling", "real_floor": "real vs real"}
KINDS = ("generated", *BASELINE_LABELS)
ONE_STEP_REFERENCES = ("persistence", "latent_persistence", "ceiling")  # the one-step table's rows after the variants
HIGHER_IS_BETTER = ("PSNR", "SSIM")  # every detector family (KID, FID, FVD, proxies or not) is lower-better
VERDICTS = ("held", "contradicted", "inconclusive")
GATES = ("one_step_psnr", "one_step_kid", "beats_still_photograph", "no_collapse")
ENTRY_NUMBERS = ("mean", "ci_low", "ci_high")


def higher_is_better(metric: str) -> bool:
    return metric in HIGHER_IS_BETTER


def paired_segments(entries: list[dict], base: list[dict]) -> list[tuple[dict, dict]]:
    """(entry, base entry) of every segment of `entries` that `base` also scores, both with a mean."""
    by = {(b["start"], b["end"]): b for b in base}
    pairs = [(e, by.get((e["start"], e["end"]))) for e in entries]
    return [(e, b) for e, b in pairs if b is not None and e["mean"] is not None and b["mean"] is not None]


def _number(value, where: str):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise StageError(f"{where} is {value!r}, not a number; {FIX}")
    return float(value) if math.isfinite(value) else None


def _entry(raw, where: str, keys=("start", "end")) -> dict:
    """A summary {mean, ci_low, ci_high, n_streams[, start, end]} with its numbers checked."""
    if not isinstance(raw, dict):
        raise StageError(f"{where} is {raw!r}, not an object; {FIX}")
    out = {k: _number(raw.get(k), f"{where}.{k}") for k in ENTRY_NUMBERS}
    out["n_streams"] = raw.get("n_streams")
    for k in keys:
        out[k] = int(field(raw, k, where, FIX, int))
    return out


def _entries(raw, where: str) -> dict[str, list[dict]]:
    """{metric: [segment-like entries]} (a variant's "segments" or "windows")."""
    if not isinstance(raw, dict):
        raise StageError(f"{where} is {raw!r}, not an object of metrics; {FIX}")
    return {metric: [_entry(e, f"{where}.{metric}[{i}]") for i, e in enumerate(field(raw, metric, where, FIX, list))]
            for metric in raw}


@dataclass
class Metrics:
    path: Path
    families: dict[str, str]
    streams: list[tuple[str, int]]
    segments: list[tuple[int, int]]
    variants: dict[str, dict]
    claims: list[dict]
    one_step: dict[str, dict]
    horizon: int
    notes: dict  # verdict_rule, bootstrap, collapse, notes: as written (text for the report's notes)
    gates: list[dict]  # evaluate's gate entries ([] from writers before gates)

    @property
    def kid(self) -> str:
        return self.families["kid"]

    def kind(self, name: str) -> str:
        return self.variants[name]["kind"]

    def generated(self) -> list[str]:
        found = [v for v, e in self.variants.items() if e["kind"] == "generated"]
        return [v for v in GENERATED_ORDER if v in found] + sorted(v for v in found if v not in GENERATED_ORDER)

    def baselines(self) -> list[str]:
        return [b for b in BASELINE_LABELS if b in self.variants]

    def label(self, name: str) -> str:
        return BASELINE_LABELS.get(name, name) if self.variants.get(name, {}).get("kind") != "generated" else name

    def metric_names(self) -> list[str]:
        """Metrics of the overall summaries: PSNR, SSIM, then the detector families, then any others."""
        found = {m for e in self.variants.values() for m in e["overall"]}
        first = [m for m in ("PSNR", "SSIM", *(self.families[k] for k in ("kid", "fid", "fvd") if k in self.families))
                 if m in found]
        return first + sorted(found - set(first))

    def window(self, name: str, metric: str, start: int, end: int) -> dict | None:
        """The summary of frames [start, end): a "windows" entry, or a segment that is exactly that window."""
        e = self.variants[name]
        for entry in e["windows"].get(metric, []) + e["segments"].get(metric, []):
            if (entry["start"], entry["end"]) == (start, end):
                return entry
        return None

    def claim_windows(self) -> list[tuple[int, int]]:
        """The frame windows the claims compare metrics on (480-600 by default)."""
        metrics = set(self.metric_names())
        return sorted({tuple(c["frames"]) for c in self.claims if c["frames"] and c["metric"] in metrics})


def _labelled(raw, where: str, key: str, allowed: tuple[str, ...]) -> str:
    """raw[key] of the JSON object `raw`, which must be one of `allowed`."""
    if not isinstance(raw, dict):
        raise StageError(f"{where} is {raw!r}, not an object; {FIX}")
    value = field(raw, key, where, FIX, str)
    if value not in allowed:
        raise StageError(f"{where}: {key} {value!r} is not one of {list(allowed)}; {FIX}")
    return value


def _variant(raw, where: str) -> dict:
    kind = _labelled(raw, where, "kind", KINDS)
    overall = field(raw, "overall", where, FIX, dict)
    ttc = raw.get("time_to_collapse") if kind != "generated" else field(raw, "time_to_collapse", where, FIX, list)
    return {"kind": kind, "streams": raw.get("streams"),
            "segments": _entries(field(raw, "segments", where, FIX, dict), f"{where}.segments"),
            "windows": _entries(raw.get("windows") or {}, f"{where}.windows"),
            "overall": {m: _entry(e, f"{where}.overall.{m}", keys=()) for m, e in overall.items()},
            "time_to_collapse": [int(field({"t": t}, "t", f"{where}.time_to_collapse[{i}]", FIX, int))
                                 for i, t in enumerate(ttc or [])]}


def _claim(raw, where: str) -> dict:
    verdict = _labelled(raw, where, "verdict", VERDICTS)
    frames = raw.get("frames")
    if frames is not None and not (isinstance(frames, list) and len(frames) == 2
                                   and all(isinstance(f, int) and not isinstance(f, bool) for f in frames)):
        raise StageError(f"{where}.frames is {frames!r}, not [start, end]; {FIX}")
    return {"claim": field(raw, "claim", where, FIX, str), "comparison": str(raw.get("comparison") or ""),
            "a": field(raw, "a", where, FIX, str), "b": raw.get("b"), "metric": field(raw, "metric", where, FIX, str),
            "frames": frames, "better": raw.get("better"), "verdict": verdict, "n_streams": raw.get("n_streams"),
            **{k: _number(raw.get(k), f"{where}.{k}") for k in ("effect", "ci_low", "ci_high")}}


def _gate(raw, where: str) -> dict:
    gate = _labelled(raw, where, "gate", GATES)
    met = raw.get("met")
    if met is not None and not isinstance(met, bool):
        raise StageError(f"{where}.met is {met!r}, not true, false or null; {FIX}")
    return {"gate": gate, "variant": field(raw, "variant", where, FIX, str), "met": met,
            "detail": str(raw.get("detail") or ""),
            **{k: _number(raw.get(k), f"{where}.{k}") for k in ("value", "limit")}}


def _one_step(raw, where: str) -> dict:
    out = {}
    for name, entry in (raw or {}).items():
        if not isinstance(entry, dict):
            raise StageError(f"{where}.{name} is {entry!r}, not an object; {FIX}")
        out[name] = {"frames": entry.get("frames"), "streams": entry.get("streams"),
                     "metrics": {m: _entry(e, f"{where}.{name}.{m}", keys=())
                                 for m, e in entry.items() if m not in ("frames", "streams", "frame_range")}}
    return out


def load(path: str | Path) -> Metrics:
    path = Path(path)
    if not path.is_file():
        raise StageError(f"{path} is missing: run `stage evaluate` (Snakemake rule `evaluate`) first")
    raw = read_json(path, FIX)
    version = raw.get("format_version")
    if version != FORMAT_VERSION:
        raise StageError(f"{path}: format_version {version!r}, but the report reads format_version "
                         f"{FORMAT_VERSION} (streams, intervals, claims); {FIX}")
    where = str(path)
    families = field(raw, "families", where, FIX, dict)
    field(families, "kid", f"{where} (families)", FIX, str)
    streams = []
    for i, s in enumerate(field(raw, "streams", where, FIX, list)):
        at = f"{where} (streams[{i}])"
        streams.append((field(s, "scene", at, FIX, str), field(s, "seed", at, FIX, int)))
    segments = []
    for i, s in enumerate(field(raw, "segments", where, FIX, list)):
        if not (isinstance(s, list) and len(s) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in s)):
            raise StageError(f"{where}: segments[{i}] is {s!r}, not [start, end]; {FIX}")
        segments.append(tuple(s))
    variants = {name: _variant(v, f"{where} (variants.{name})")
                for name, v in field(raw, "variants", where, FIX, dict).items()}
    if not any(v["kind"] == "generated" for v in variants.values()):
        raise StageError(f"{where}: no generated variant under \"variants\"; {FIX}")
    claims = [_claim(c, f"{where} (claims[{i}])") for i, c in enumerate(raw.get("claims") or [])]
    horizon = raw.get("horizon")
    if horizon is None:  # older v2 writers: the rollouts end where the last segment ends
        horizon = segments[-1][1] if segments else 0
    horizon = int(field({"horizon": horizon}, "horizon", where, FIX, int))
    notes = {k: raw.get(k) for k in ("verdict_rule", "bootstrap", "collapse", "notes")}
    gates = [_gate(g, f"{where} (gates[{i}])") for i, g in enumerate(raw.get("gates") or [])]
    return Metrics(path, dict(families), streams, segments, variants, claims,
                   _one_step(raw.get("one_step"), f"{where} (one_step)"), horizon, notes, gates)
