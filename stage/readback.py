"""Reading back what an earlier step (or someone else) wrote: a damaged file becomes one StageError line.

Every reader of a pipeline artifact goes through these, so a truncated, empty or random-bytes file is
refused with the file's name and what to do, never a library's traceback. `fix` is the remedy, e.g.
"re-run `stage encode`". Nothing here repairs a file; callers that can (resume) decide what to fall
back to.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from stage.errors import StageError


def _damaged(path: Path, what: str, exc: Exception | str, fix: str) -> StageError:
    detail = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
    detail = " ".join(str(detail).split())[:200]  # one line, whatever the library said
    return StageError(f"{path}: {what}{f' ({detail})' if detail else ''}; {fix}")


def _require(path: Path, fix: str) -> None:
    if not path.is_file():
        raise StageError(f"{path}: file missing; {fix}")


def read_json(path: str | Path, fix: str, kind: type = dict):
    """The JSON document at `path`, which must be a `kind` (a dict by default)."""
    path = Path(path)
    _require(path, fix)
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _damaged(path, "not a readable JSON file", exc, fix) from exc
    if not isinstance(data, kind):
        raise _damaged(path, f"holds a JSON {type(data).__name__}, not a {kind.__name__}", "", fix)
    return data


def field(data: dict, key: str, path: str | Path, fix: str, kind: type | tuple = object):
    """data[key], which must be of `kind`: the one way a reader takes a field from a file it did not check."""
    if not isinstance(data, dict) or key not in data:
        raise StageError(f"{path}: field {key!r} is missing; {fix}")
    value = data[key]
    if not isinstance(value, kind) or (kind in (int, float) and isinstance(value, bool)):
        raise StageError(f"{path}: field {key!r} is {value!r}, not of the expected type; {fix}")
    return value


def load_safetensors(path: str | Path, fix: str, device: str = "cpu") -> dict:
    """All tensors of a safetensors file (never a pickle)."""
    from safetensors.torch import load_file

    path = Path(path)
    _require(path, fix)
    try:
        return load_file(str(path), device=str(device))
    except Exception as exc:  # safetensors raises its own error types (and OSError) for damaged files
        raise _damaged(path, "not a readable safetensors file", exc, fix) from exc


def safetensors_header(path: str | Path, fix: str) -> tuple[dict[str, str], dict[str, list[int]]]:
    """(metadata strings, {tensor name: shape}) of a safetensors file, reading only its header."""
    from safetensors import safe_open

    path = Path(path)
    _require(path, fix)
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {}), {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as exc:
        raise _damaged(path, "not a readable safetensors file", exc, fix) from exc


def open_rows(path: str | Path, fix: str):
    """A reader of the rows of a safetensors file's tensors (stage.formats.tensor_file.TensorRows), its header
    checked."""
    from stage.formats.tensor_file import TensorRows

    path = Path(path)
    _require(path, fix)
    try:
        return TensorRows(path)
    except Exception as exc:  # struct / JSON / shape errors of a damaged header
        raise _damaged(path, "not a readable safetensors file", exc, fix) from exc


def load_npy(path: str | Path, fix: str, mmap: bool = True, dtype=None, ndim: int | None = None) -> np.ndarray:
    """A .npy array (pickled objects refused), memory-mapped by default; its header is checked against the
    file size, so a truncated file is refused here rather than at the first read past its end."""
    path = Path(path)
    _require(path, fix)
    try:
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except Exception as exc:  # ValueError / OSError / EOFError for bad headers and short files
        raise _damaged(path, "not a readable .npy array", exc, fix) from exc
    if dtype is not None and arr.dtype != np.dtype(dtype):
        raise _damaged(path, f"holds {arr.dtype}, not {np.dtype(dtype)}", "", fix)
    if ndim is not None and arr.ndim != ndim:
        raise _damaged(path, f"holds an array of shape {arr.shape}, not {ndim}-dimensional", "", fix)
    return arr


def read_parquet(path: str | Path, fix: str, columns: dict[str, str] | None = None):
    """A parquet table read single-threaded (Arrow's reader threads abort the interpreter at exit in about
    one run in five here); `columns` names those that must be present."""
    import pandas as pd

    path = Path(path)
    _require(path, fix)
    try:
        df = pd.read_parquet(path, use_threads=False)
    except Exception as exc:  # pyarrow's ArrowInvalid and OSError for damaged files
        raise _damaged(path, "not a readable parquet table", exc, fix) from exc
    missing = [c for c in (columns or {}) if c not in df.columns]
    if missing:
        raise _damaged(path, f"lacks the columns {missing[:4]}", "", fix)
    return df
