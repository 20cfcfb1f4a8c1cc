"""safetensors files written through stage.formats.tensor_file have one byte sequence per content, whichever
process writes them (safetensors alone orders the metadata map differently from process to process)."""

import json
import subprocess
import sys

from safetensors import safe_open
from safetensors.torch import load_file

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
