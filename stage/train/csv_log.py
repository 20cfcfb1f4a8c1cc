"""The training runs' CSV logs (loss.csv, stage3_collections.csv): rows appended as a run goes, and cut back to
the last checkpoint's step when a run resumes."""

from __future__ import annotations

import csv
import os
from pathlib import Path


def truncate_csv(path: Path, key: str, keep_upto: int) -> None:
    """Drop rows whose `key` exceeds keep_upto (steps redone after a resume)."""
    if not path.is_file():
        return
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(r for r in rows if int(r[key]) <= keep_upto)
    os.replace(tmp, path)


def append_csv(path: Path, fields, row: dict) -> None:
    new = not path.is_file() or path.stat().st_size == 0
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(fields))
        if new:
            w.writeheader()
        w.writerow(row)
