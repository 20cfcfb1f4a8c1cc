"""Writes that are never seen half-done: write under a temporary name beside the target, then rename."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def replace_dir(tmp: str | Path, final: str | Path) -> Path:
    """Put the finished folder `tmp` at `final`, replacing what was there only once `tmp` is complete."""
    tmp, final = Path(tmp), Path(final)
    old = final.parent / f".{final.name}.old-{os.getpid()}"
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return final
