"""Content digests of files: what provenance records, what a cache or a rollout is keyed on, and what decides
whether a checkpoint still fits. One sha256 routine serves them all, so a key never depends on which module
computed it."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable


def sha256_of(paths: Iterable[str | Path], *, named: bool = False, prefix: str = "", length: int | None = 16) -> str:
    """sha256 of `prefix`, then of each file in the order given (its name first where `named`), hex, cut to
    `length` characters (None: all 64)."""
    h = hashlib.sha256(prefix.encode())
    for p in paths:
        if named:
            h.update(Path(p).name.encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()[:length] if length else h.hexdigest()


def file_digest(*paths: str | Path) -> str:
    """Short sha256 of the files' bytes, in the order given."""
    return sha256_of(paths)
