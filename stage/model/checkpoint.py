"""A StageModel (and its condition encoders) to and from a trained run's files, stage.formats.trained_run: the
model's config rides along as metadata, so the model is rebuilt from the file alone."""

from __future__ import annotations

from pathlib import Path

from diffusers import UNet2DConditionModel

from stage.errors import StageError
from stage.formats import trained_run
from stage.formats.trained_run import CONDITIONS, FIX, MODEL, shape_problems, tensor_problems
from stage.model.denoiser import StageModel
from stage.readback import field

TRAINED_FIX = "re-run the `stage train` that wrote this folder (its --out)"


def metadata_sections(model: StageModel) -> dict:
    """The config sections model.safetensors records: what rebuilds the model."""
    backbone = dict(model.unet.unet.config)
    if "_use_default_values" in backbone:  # diffusers keeps it as a set: sorted, so equal configs write equal bytes
        backbone["_use_default_values"] = sorted(backbone["_use_default_values"])
    return {"model": model.model_cfg, "diffusion": model.diffusion_cfg, "backbone": backbone}


def save_checkpoint(model: StageModel, path: str | Path, extra: dict | None = None) -> None:
    trained_run.write_model(model, path, metadata_sections(model), extra)


def load_checkpoint(path: str | Path, device: str = "cpu", fix: str = FIX) -> StageModel:
    """Rebuild the model from the checkpoint's own config and backbone architecture, load its weights (strict).

    A `pretrained_unet` directory is not re-read: the checkpoint holds every weight. A damaged file, or
    metadata that builds no model, is a StageError naming the file (and the field).
    """
    path = Path(path)
    meta, shapes = trained_run.read_header(path, fix)
    parts = trained_run.model_sections(path, meta, fix)
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
    model.load_state_dict(trained_run.read_tensors(path, fix, device=str(device)), strict=True)
    return model


def load_trained(directory: str | Path, config: dict | None = None, device: str = "cpu"):
    """(StageModel, ConditionEncoder) of a finished training run's --out directory, for rollouts.

    config: the full config (its `conditions` section builds the encoder); default: the one stored in the files.
    A damaged file is a StageError naming it.
    """
    from stage.latents.conditions import build_condition_encoder

    directory = Path(directory)
    model = load_checkpoint(directory / MODEL, device=device, fix=TRAINED_FIX)
    cpath = directory / CONDITIONS
    meta, _ = trained_run.read_header(cpath, TRAINED_FIX)
    cond_cfg = config["conditions"] if config is not None else field(meta, "conditions", cpath, TRAINED_FIX)
    try:
        conditions = build_condition_encoder(cond_cfg, model.unet.unet.config.out_channels, device)
    except (KeyError, TypeError, ValueError) as exc:
        raise StageError(f"{cpath}: metadata field 'conditions' builds no condition encoder "
                         f"({type(exc).__name__}: {exc}); {TRAINED_FIX}") from exc
    cw = trained_run.read_tensors(cpath, TRAINED_FIX, device=device)
    problem = tensor_problems(cpath, cw, conditions.state_dict())
    if problem:
        raise StageError(f"{problem}; {TRAINED_FIX}")
    conditions.load_state_dict(cw, strict=True)
    return model, conditions
