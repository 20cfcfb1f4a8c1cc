"""Save and load a StageModel as safetensors (never pickles); the model/diffusion config rides along as metadata."""

from __future__ import annotations

import json
from pathlib import Path

from diffusers import UNet2DConditionModel
from safetensors import safe_open
from safetensors.torch import load_model, save_model

from stage.model.denoiser import StageModel


def save_checkpoint(model: StageModel, path: str | Path, extra: dict | None = None) -> None:
    meta = {"model": json.dumps(model.model_cfg), "diffusion": json.dumps(model.diffusion_cfg),
            "backbone": json.dumps(dict(model.unet.unet.config))}
    meta.update({k: json.dumps(v) for k, v in (extra or {}).items()})
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_model(model, str(path), metadata=meta)


def read_metadata(path: str | Path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        return {k: json.loads(v) for k, v in (f.metadata() or {}).items()}


def load_checkpoint(path: str | Path, device: str = "cpu") -> StageModel:
    """Rebuild the model from the checkpoint's own config and backbone architecture, load its weights (strict).

    A `pretrained_unet` directory is not re-read: the checkpoint holds every weight.
    """
    meta = read_metadata(path)
    backbone = UNet2DConditionModel.from_config(meta["backbone"])
    model = StageModel.from_config({"model": meta["model"], "diffusion": meta["diffusion"]}, backbone=backbone)
    load_model(model, str(path), strict=True, device=device)
    return model
