"""safetensors files written with reproducible bytes, for every artifact that stores tensors with metadata, and
read row by row without a memory map.

safetensors serialises the `__metadata__` map in hash order, which changes from process to process: two runs
that save equal tensors and equal metadata write different bytes, so their digests (which rollout identities,
cache manifests and DVC record) differ. These writers save with safetensors, then rewrite the header in place
with the metadata keys sorted: the same length, tensors and offsets, one byte sequence per content.

`TensorRows` reads rows of a file's tensors with pread. safetensors' own lazy reader maps the file, and every
page it touches stays in the process's resident memory while the file is open: a rollout reading one layout
row per frame grew by the layouts' size over the video, as if memory grew with the video length.
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path

import torch
from safetensors.torch import save_file, save_model


def _read_header(f) -> tuple[int, object]:
    """(the header's length in bytes, the parsed header) of the safetensors file open as `f`, at its start."""
    (size,) = struct.unpack("<Q", f.read(8))
    return size, json.loads(f.read(size))


def canonical_header(path: str | Path) -> None:
    """Sort the metadata keys of the safetensors file at `path`, in place (a file whose header would not keep its
    length is left as safetensors wrote it)."""
    with open(path, "r+b") as f:
        size, header = _read_header(f)
        meta = header.get("__metadata__")
        if not isinstance(meta, dict) or len(meta) < 2:
            return
        header["__metadata__"] = dict(sorted(meta.items()))  # keeps its place, first
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        if len(text) <= size:
            f.seek(8)
            f.write(text.ljust(size, b" "))  # safetensors pads its header with spaces too


def save_tensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    save_file(tensors, str(path), metadata=metadata)
    canonical_header(path)


def save_module(module: torch.nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """A module's state dict (shared tensors stored once, as safetensors' save_model does)."""
    save_model(module, str(path), metadata=metadata)
    canonical_header(path)


# safetensors' dtype names (its format's documentation)
DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
          "BOOL": torch.bool}


class TensorRows:
    """Rows along the first dimension of the tensors of one safetensors file, each `get` one pread (ValueError
    for a header this reader cannot use, OSError for a file shorter than its header says)."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        with open(self.path, "rb") as f:
            size, header = _read_header(f)
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        header.pop("__metadata__", None)
        self._start = 8 + size
        self._entries: dict[str, tuple[torch.dtype, tuple[int, ...], int]] = {}
        for key, entry in header.items():
            if not isinstance(entry, dict) or entry.get("dtype") not in DTYPES:
                raise ValueError(f"tensor {key!r} has no dtype this reader knows")
            shape, (begin, end) = tuple(int(n) for n in entry["shape"]), entry["data_offsets"]
            if end - begin != math.prod(shape) * DTYPES[entry["dtype"]].itemsize:
                raise ValueError(f"tensor {key!r}: its data offsets do not fit its shape {list(shape)}")
            self._entries[key] = (DTYPES[entry["dtype"]], shape, int(begin))

    def keys(self) -> list[str]:
        return list(self._entries)

    def get(self, key: str, index: int | slice = slice(None)) -> torch.Tensor:
        """Row `index` (its first dimension dropped) or rows `index` (a slice) of tensor `key`, a copy."""
        dtype, shape, begin = self._entries[key]
        if not shape:
            return self._read(begin, 0, dtype, ())[0]
        rows = range(shape[0])[index]  # IndexError for a row out of range, as a tensor would raise
        if isinstance(rows, int):
            return self._read(begin, rows, dtype, shape[1:], 1)[0]
        if not rows:
            return torch.empty((0, *shape[1:]), dtype=dtype)
        step, first = rows.step, min(rows[0], rows[-1])
        out = self._read(begin, first, dtype, shape[1:], abs(rows[-1] - rows[0]) + 1)
        return out[::step] if step > 0 else out.flip(0)[::-step]

    def _read(self, begin: int, row: int, dtype: torch.dtype, row_shape: tuple, n: int = 1) -> torch.Tensor:
        row_bytes = math.prod(row_shape) * dtype.itemsize
        buf = bytearray(n * row_bytes)
        if buf:
            fd = os.open(self.path, os.O_RDONLY)
            try:
                got = os.preadv(fd, [buf], self._start + begin + row * row_bytes)
            finally:
                os.close(fd)
            if got != len(buf):
                raise OSError(f"shorter than its header says ({got} of {len(buf)} bytes)")
        flat = torch.frombuffer(buf, dtype=dtype) if buf else torch.empty(0, dtype=dtype)
        return flat.reshape(n, *row_shape)
