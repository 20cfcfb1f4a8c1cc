"""safetensors files written with reproducible bytes, for every artifact that stores tensors with metadata.

safetensors serialises the `__metadata__` map in hash order, which changes from process to process: two runs
that save equal tensors and equal metadata write different bytes, so their digests (which rollout identities,
cache manifests and DVC record) differ. These writers save with safetensors, then rewrite the header in place
with the metadata keys sorted: the same length, tensors and offsets, one byte sequence per content.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch
from safetensors.torch import save_file, save_model


def canonical_header(path: str | Path) -> None:
    """Sort the metadata keys of the safetensors file at `path`, in place (a file whose header would not keep its
    length is left as safetensors wrote it)."""
    with open(path, "r+b") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
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
