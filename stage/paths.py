"""Where names from data become paths, and where the pipeline deletes: both checked here.

A dataset is written by someone else, so a scene name from its tables (or from an index or manifest the
pipeline wrote earlier) may hold `..`, `/`, an absolute path or a NUL byte. Such a name is refused, not
repaired: a cleaned-up name could collide with another scene's, and the user should see what is wrong.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from stage.errors import StageError

MAX_NAME_BYTES = 255  # the longest file name Linux file systems accept


def name_problem(name) -> str | None:
    """Why `name` cannot be one folder or file name, or None when it can."""
    if not isinstance(name, str):
        return f"it is a {type(name).__name__}, not a string"
    if not name:
        return "it is empty"
    if name in (".", ".."):
        return "it is a relative path step"
    if "/" in name or "\\" in name or "\0" in name:
        return "it holds a path separator or a NUL byte"
    if name.startswith("."):  # the pipeline's own temporaries are hidden names in the same folders
        return "it starts with '.'"
    if any(ord(c) < 32 for c in name):
        return "it holds a control character"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return f"it is longer than {MAX_NAME_BYTES} bytes"
    return None


def safe_name(name, what: str, where: str | Path, fix: str) -> str:
    """`name` if it is one safe path component; else StageError naming it, the table it came from and the fix."""
    problem = name_problem(name)
    if problem:
        raise StageError(f"{where}: {what} {name!r} cannot name a folder ({problem}); {fix}")
    return name


def child(root: str | Path, name, what: str, where: str | Path, fix: str) -> Path:
    """root / name, for a name read from data (see safe_name)."""
    return Path(root) / safe_name(name, what, where, fix)


def check_inside(target: str | Path, root: str | Path) -> Path:
    """`target` if it lies strictly inside `root` (both resolved, symlinks followed); else StageError."""
    lexical = Path(os.path.abspath(target))  # `..` steps resolved first; the last component is not followed
    t, r = Path(os.path.realpath(lexical.parent)) / lexical.name, Path(os.path.realpath(root))
    if t == r or r not in t.parents:
        raise StageError(f"refusing to write or delete {target}: it is not inside the output folder {root}")
    return Path(target)


def remove_tree(target: str | Path, root: str | Path) -> None:
    """Delete the folder (or file) `target`, which must lie inside `root`; absent targets are fine."""
    target = Path(target)
    if not target.exists() and not target.is_symlink():
        return
    check_inside(target, root)
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target, ignore_errors=True)
    else:
        target.unlink(missing_ok=True)


def output_dir(path: str | Path, flag: str = "--out") -> Path:
    """A folder to write into, created if missing; StageError when an existing file holds its name."""
    path = Path(path)
    for p in (path, *path.parents):
        if p.exists() and not p.is_dir():
            raise StageError(f"{flag} {path}: {p} is an existing file, not a folder; pass a folder path "
                             "(or move the file away)")
        if p.is_dir():
            break
    path.mkdir(parents=True, exist_ok=True)
    return path


def output_file(path: str | Path, flag: str = "--out") -> Path:
    """A file path to write, its folder created; StageError when the path is an existing folder."""
    path = Path(path)
    if path.is_dir():
        raise StageError(f"{flag} {path} is an existing folder; pass a file path")
    output_dir(path.parent, flag)
    return path
