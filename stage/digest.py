"""Content digests of files: what provenance records and what decides whether a checkpoint still fits."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_digest(*paths: str | Path) -> str:
    """Short sha256 of the files' bytes, in the order given."""
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()[:16]
