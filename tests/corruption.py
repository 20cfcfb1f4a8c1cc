"""Damage a file in a named way, run the command that reads it, and check the refusal: the tables of the
corruption tests are built from these."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from stage import cli

WAYS = ("truncate", "random", "empty")


def corrupt(path: Path, how: str, seed: int = 0) -> None:
    """truncate: keep the first half of the bytes; random: same size, random bytes; empty: zero bytes."""
    path = Path(path)
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: max(1, len(data) // 2)])
    elif how == "random":
        path.write_bytes(np.random.default_rng(seed).integers(0, 256, max(len(data), 64), dtype=np.uint8).tobytes())
    elif how == "empty":
        path.write_bytes(b"")
    else:
        raise ValueError(f"unknown corruption {how!r}; one of {WAYS}")


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """`stage ARGV` in this process: (exit status, stdout, stderr)."""
    capsys.readouterr()
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_refused(rc: int, err: str, path: Path | str, *also: str) -> None:
    """Exit status 2, one line on stderr that names the file (not only its folder), no traceback."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2, f"exit status {rc}, expected 2; stderr:\n{err[-3000:]}"
    assert "Traceback" not in err, err[-3000:]
    assert len(lines) == 1, f"expected one line, got {len(lines)}:\n{err[-3000:]}"
    assert Path(path).name in lines[0], f"the message does not name {Path(path).name}: {lines[0]}"
    for word in also:
        assert word in lines[0], f"{word!r} not in: {lines[0]}"


def tree_digest(root: Path, skip: Path | None = None) -> dict[str, str]:
    """{relative path: sha256 (files) or 'dir' / 'link -> target'} of everything under root, except `skip`."""
    root = Path(root)
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        if skip is not None and (d == skip or skip in d.parents):
            dirnames[:] = []
            continue
        for name in dirnames + filenames:
            p = d / name
            if skip is not None and p == skip:
                continue
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = f"link -> {os.readlink(p)}"
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out
