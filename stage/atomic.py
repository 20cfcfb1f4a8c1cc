"""Writes that are never seen half-done: write under a temporary name beside the target, then rename."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from stage.errors import StageError
from stage.paths import check_inside


def write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def replace_dir(tmp: str | Path, final: str | Path) -> Path:
    """Put the finished folder `tmp` at `final`, replacing what was there only once `tmp` is complete.

    `final` is replaced whole, so it must be a folder of its own (not `.`, `..` or a parent of the current
    folder) and `tmp` its sibling."""
    tmp, final = Path(tmp), Path(final)
    parent = Path(os.path.abspath(final)).parent
    check_inside(final, parent)
    if Path(os.path.abspath(tmp)).parent != parent or Path.cwd().resolve().is_relative_to(final.resolve()):
        raise StageError(f"refusing to replace {final}: it must be a folder beside {tmp} and not hold the "
                         "current folder")
    old = final.parent / f".{final.name}.old-{os.getpid()}"
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return final
