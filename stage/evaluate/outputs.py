"""Writing the evaluation: CSV tables and metrics.json, the latter checked against its schema first.

metrics.json is written last, through a hidden temporary renamed into place: a folder whose metrics.json
exists holds a complete evaluation. Non-finite numbers become null (JSON has no NaN).
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import jsonschema
import numpy as np
import yaml

from stage.atomic import write_text
from stage.config import SCHEMA_DIR

SCHEMA_PATH = SCHEMA_DIR / "metrics.schema.yaml"
SEGMENT_COLUMNS = ("variant", "segment_start", "segment_end", "metric", "mean", "ci_low", "ci_high", "n_streams",
                   "name", "protocol_hash")
STREAM_COLUMNS = ("variant", "scene", "seed", "segment_start", "segment_end", "metric", "value")
DIFFERENCE_COLUMNS = ("a", "b", "range", "segment_start", "segment_end", "metric", "better", "effect", "ci_low",
                      "ci_high", "n_streams")


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
