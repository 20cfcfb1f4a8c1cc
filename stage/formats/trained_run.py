"""The on-disk format of a trained run's weights: what `stage train` exports into its --out folder, what the
next stage's `--init` and `stage rollout --checkpoint` read. Safetensors only: nothing is ever unpickled.

    <run>/model.safetensors        the StageModel's state dict; metadata, each value a JSON text:
        model                      the config's `model` section
        diffusion                  the config's `diffusion` section
        backbone                   the UNet backbone's diffusers config (its architecture: the model is rebuilt
                                   from the file alone, without a `pretrained_unet` folder)
        train_stage, train_variant, train_step    what the run was (an export records all three; the copy in
                                   a training checkpoint, train_step only)
    <run>/conditions.safetensors   the learned box / anchor encoder weights (no tensors for frozen CLIP
                                   encoders: the file is written all the same, so readers need no special case);
                                   metadata `conditions`: the config's `conditions` section (JSON text)

There is no version field: the metadata says what to build, and a reader compares the file's tensor names and
shapes with what it built (`shape_problems`). An export writes both files under temporary names and renames
conditions.safetensors first, so a folder holding model.safetensors holds a complete run. A training
checkpoint (stage/train/checkpointing.py) keeps the same two files next to its optimizer state.

This module writes and reads the files: metadata (decoded, with the tensor shapes, from the header alone) and
tensors. Building a model or condition encoder from them is the caller's (stage.model.load_trained).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from stage.errors import StageError
from stage.formats.tensor_file import save_module, save_tensors
from stage.readback import field, load_safetensors, safetensors_header

MODEL = "model.safetensors"
CONDITIONS = "conditions.safetensors"
FIX = "re-run the `stage train` that wrote it (its --out holds model.safetensors)"


def write_model(model: torch.nn.Module, path: str | Path, sections: dict, extra: dict | None = None) -> None:
    """model.safetensors: the module's weights, `sections` ({"model", "diffusion", "backbone"}: the config that
    builds it) and `extra` (train_*) as metadata."""
    meta = {k: json.dumps(v) for k, v in sections.items()}
    meta.update({k: json.dumps(v) for k, v in (extra or {}).items()})
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_module(model, path, metadata=meta)


def write_conditions(conditions: torch.nn.Module, path: str | Path, conditions_cfg: dict) -> None:
    """conditions.safetensors: the condition encoders' weights, the `conditions` config section as metadata."""
    meta = {"conditions": json.dumps(conditions_cfg)}
    if any(True for _ in conditions.state_dict()):
        save_module(conditions, path, metadata=meta)
    else:
        save_tensors({}, path, metadata=meta)


def write_run(out: str | Path, model: torch.nn.Module, sections: dict, conditions: torch.nn.Module,
              conditions_cfg: dict, extra: dict) -> None:
    """A run's two files in `out`, each written then renamed, model.safetensors last (it marks the run complete)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp_model, tmp_cond = out / f".{MODEL}.tmp", out / f".{CONDITIONS}.tmp"
    write_model(model, tmp_model, sections, extra)
    write_conditions(conditions, tmp_cond, conditions_cfg)
    os.replace(tmp_cond, out / CONDITIONS)
    os.replace(tmp_model, out / MODEL)


def read_header(path: str | Path, fix: str = FIX) -> tuple[dict, dict[str, list[int]]]:
    """(metadata with every field JSON-decoded, {tensor name: shape}) of either file, from its header alone; a
    file that cannot be read or a field that is not JSON is a StageError naming the file (and the field)."""
    path = Path(path)
    strings, shapes = safetensors_header(path, fix)
    meta = {}
    for key, text in strings.items():
        try:
            meta[key] = json.loads(text)
        except json.JSONDecodeError as exc:
            raise StageError(f"{path}: metadata field {key!r} is not valid JSON ({exc.msg}); {fix}") from exc
    return meta, shapes


def read_metadata(path: str | Path, fix: str = FIX) -> dict:
    """The file's metadata, JSON-decoded (see read_header)."""
    return read_header(path, fix)[0]


def model_sections(path: str | Path, meta: dict, fix: str = FIX) -> dict:
    """The config sections of model.safetensors' metadata that rebuild the model: {"backbone", "model",
    "diffusion"}, each an object (StageError naming the file and the field otherwise)."""
    return {key: field(meta, key, path, fix, dict) for key in ("backbone", "model", "diffusion")}


def read_tensors(path: str | Path, fix: str = FIX, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Every tensor of either file."""
    return load_safetensors(path, fix, device=device)


def shape_problems(path: Path, shapes: dict[str, list[int]], expected: dict[str, list[int]]) -> str | None:
    """A one-line account of how a file's tensors differ from the expected names and shapes, or None."""
    missing = [k for k in expected if k not in shapes]
    unexpected = [k for k in shapes if k not in expected]
    wrong = [f"{k} {shapes[k]} != {expected[k]}" for k in expected if k in shapes and list(shapes[k]) != list(expected[k])]
    if not (missing or unexpected or wrong):
        return None
    return (f"{path}: its tensors do not match the ones the config builds (missing {missing[:3]}, unexpected {unexpected[:3]}, "
            f"wrong shape {wrong[:3]})")


def tensor_problems(path: Path, tensors: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> str | None:
    """shape_problems of tensors read from `path` against the tensors (a state dict) they should fill."""
    return shape_problems(path, {k: list(v.shape) for k, v in tensors.items()},
                          {k: list(v.shape) for k, v in expected.items()})
