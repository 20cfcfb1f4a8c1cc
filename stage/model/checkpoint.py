"""Save and load a StageModel as safetensors (never pickles); the model/diffusion config rides along as metadata."""

from __future__ import annotations

import json
from pathlib import Path

from diffusers import UNet2DConditionModel
from safetensors.torch import load_model, save_model

from stage.errors import StageError
from stage.model.denoiser import StageModel
from stage.readback import field, safetensors_header

FIX = "re-run the `stage train` that wrote it (its --out holds model.safetensors)"


def save_checkpoint(model: StageModel, path: str | Path, extra: dict | None = None) -> None:
    meta = {"model": json.dumps(model.model_cfg), "diffusion": json.dumps(model.diffusion_cfg),
            "backbone": json.dumps(dict(model.unet.unet.config))}
    meta.update({k: json.dumps(v) for k, v in (extra or {}).items()})
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_model(model, str(path), metadata=meta)


def _decode_metadata(path: Path, strings: dict[str, str], fix: str) -> dict:
    meta = {}
    for key, text in strings.items():
        try:
            meta[key] = json.loads(text)
        except json.JSONDecodeError as exc:
            raise StageError(f"{path}: metadata field {key!r} is not valid JSON ({exc.msg}); {fix}") from exc
    return meta


def read_metadata(path: str | Path, fix: str = FIX) -> dict:
    """The checkpoint's metadata, JSON-decoded (StageError naming the file when it cannot be read)."""
    strings, _ = safetensors_header(path, fix)
    return _decode_metadata(Path(path), strings, fix)


def shape_problems(path: Path, shapes: dict[str, list[int]], expected: dict[str, list[int]]) -> str | None:
    """A one-line account of how a file's tensors differ from the expected names and shapes, or None."""
    missing = [k for k in expected if k not in shapes]
    unexpected = [k for k in shapes if k not in expected]
    wrong = [f"{k} {shapes[k]} != {expected[k]}" for k in expected if k in shapes and list(shapes[k]) != list(expected[k])]
    if not (missing or unexpected or wrong):
        return None
    return (f"{path}: its tensors do not match the ones the config builds (missing {missing[:3]}, unexpected {unexpected[:3]}, "
            f"wrong shape {wrong[:3]})")


def load_checkpoint(path: str | Path, device: str = "cpu", fix: str = FIX) -> StageModel:
    """Rebuild the model from the checkpoint's own config and backbone architecture, load its weights (strict).

    A `pretrained_unet` directory is not re-read: the checkpoint holds every weight. A damaged file, or
    metadata that builds no model, is a StageError naming the file (and the field).
    """
    path = Path(path)
    strings, shapes = safetensors_header(path, fix)
    meta = _decode_metadata(path, strings, fix)
    parts = {key: field(meta, key, path, fix, dict) for key in ("backbone", "model", "diffusion")}
    try:
        backbone = UNet2DConditionModel.from_config(parts["backbone"])
        model = StageModel.from_config({"model": parts["model"], "diffusion": parts["diffusion"]}, backbone=backbone)
    except Exception as exc:  # whatever a config dict of the wrong form makes diffusers or the model raise
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        raise StageError(f"{path}: its metadata fields 'backbone' / 'model' / 'diffusion' build no model "
                         f"({detail}); {fix}") from exc
    problem = shape_problems(path, shapes, {k: list(v.shape) for k, v in model.state_dict().items()})
    if problem:
        raise StageError(f"{problem}; {fix}")
    try:
        load_model(model, str(path), strict=True, device=str(device))
    except Exception as exc:  # the header was intact; a read error past it
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        raise StageError(f"{path}: its tensors cannot be read ({detail}); {fix}") from exc
    return model
