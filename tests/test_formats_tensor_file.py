"""safetensors files written through stage.formats.tensor_file have one byte sequence per content, whichever
process writes them (safetensors alone orders the metadata map differently from process to process)."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from stage.formats.tensor_file import TensorRows, save_tensors

WRITE = """
import sys, torch
from stage.formats.tensor_file import save_tensors
meta = {k: str(i) for i, k in enumerate("qwertyuiopasdfgh")} | {"scene": "caf\\u00e9 \\"x\\"\\n"}
save_tensors({"b": torch.arange(6.0).reshape(2, 3), "a": torch.ones(4, dtype=torch.int64)}, sys.argv[1], meta)
"""

RAW = """
import sys, torch
from safetensors.torch import save_file
meta = {k: str(i) for i, k in enumerate("qwertyuiopasdfgh")}
save_file({"a": torch.ones(2)}, sys.argv[1], metadata=meta)
"""


def _write(code, path):
    subprocess.run([sys.executable, "-c", code, str(path)], check=True)
    return path.read_bytes()


def test_equal_content_gives_equal_bytes_across_processes(tmp_path):
    files = [_write(WRITE, tmp_path / f"{i}.safetensors") for i in range(4)]
    assert all(f == files[0] for f in files)
    size = int.from_bytes(files[0][:8], "little")
    header = json.loads(files[0][8:8 + size])
    assert list(header["__metadata__"]) == sorted(header["__metadata__"])
    with safe_open(str(tmp_path / "0.safetensors"), "pt") as f:  # safetensors reads the rewritten header
        meta = f.metadata()
    assert meta["scene"] == 'caf\u00e9 "x"\n' and meta["q"] == "0" and len(meta) == 17
    tensors = load_file(str(tmp_path / "0.safetensors"))
    assert tensors["b"].tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]] and tensors["a"].tolist() == [1, 1, 1, 1]


def test_safetensors_alone_does_not_give_equal_bytes(tmp_path):
    """Why the rewrite exists: if this starts failing, safetensors orders its metadata itself."""
    files = {_write(RAW, tmp_path / f"{i}.safetensors") for i in range(6)}
    assert len(files) > 1


def test_tensor_rows_read_what_safetensors_reads(tmp_path):
    g = torch.Generator().manual_seed(0)
    tensors = {"f32": torch.randn(9, 2, 3, generator=g), "bf16": torch.randn(7, 4, generator=g).bfloat16(),
               "mask": torch.rand(6, 5, generator=g) > 0.5, "i64": torch.arange(11), "scalar": torch.tensor(2.5),
               "u8": torch.randint(0, 255, (5, 3), generator=g, dtype=torch.uint8)}
    path = tmp_path / "t.safetensors"
    save_tensors(tensors, path, {"scene": "x"})
    rows = TensorRows(path)
    assert sorted(rows.keys()) == sorted(tensors)
    with safe_open(str(path), "pt") as f:
        for key, full in tensors.items():
            if full.ndim == 0:
                assert torch.equal(rows.get(key), full) and rows.get(key).ndim == 0
                continue
            for index in (slice(None), slice(1, 4), 0, 2, -1, slice(-3, None), slice(0, 5, 2), slice(3, 3)):
                got, want = rows.get(key, index), f.get_slice(key)[index]
                assert got.dtype == want.dtype and got.shape == want.shape and torch.equal(got, want), (key, index)
            assert torch.equal(rows.get(key, slice(None, None, -2)), full.flip(0)[::2])
            with pytest.raises(IndexError):
                rows.get(key, len(full))
    size = int.from_bytes(path.read_bytes()[:8], "little")
    header = json.loads(path.read_bytes()[8:8 + size])
    last = max((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][1])
    with open(path, "r+b") as fh:  # cut inside the last tensor's bytes
        fh.truncate(path.stat().st_size - 3)
    with pytest.raises(OSError, match="shorter than its header says"):
        rows.get(last)
