"""Load a trained model + condition encoders for a rollout, with errors that say what does not match.

A checkpoint is a training run's --out folder (model.safetensors + conditions.safetensors, the format of
stage.formats.trained_run) or its model.safetensors. Loading goes through `stage.model.load_trained`; before
that, the checkpoint's tensors are compared with the model the config describes (built on the meta device,
no memory), so a checkpoint of another config is named as such, with the config keys that differ.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from stage.digest import file_digest
from stage.errors import StageError
from stage.formats.trained_run import CONDITIONS, MODEL, read_header, shape_problems

REEXPORT = "re-export it with `stage train`"


def checkpoint_files(path: str | Path) -> tuple[Path, Path]:
    path = Path(path)
    model = path / MODEL if path.is_dir() else path
    if not model.is_file():
        raise StageError(f"checkpoint {path} not found: pass --checkpoint the --out folder of `stage train` "
                         "(holding model.safetensors and conditions.safetensors) or its model.safetensors")
    cond = model.with_name(CONDITIONS)
    if not cond.is_file():
        raise StageError(f"{cond} is missing: a rollout needs the condition encoders trained with the model "
                         "(`stage train` writes both files into its --out folder)")
    return model, cond


def config_differences(a, b, prefix: str) -> list[str]:
    """Dotted keys whose values differ between two config sections."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += config_differences(a.get(k), b.get(k), f"{prefix}.{k}")
        return out
    return [] if a == b else [f"{prefix} (checkpoint {a!r}, config {b!r})"]


def check_against_config(model_path: Path, cond_path: Path, config: dict) -> dict:
    """StageError unless the checkpoint's weights fit the model and encoders `config` describes; returns the
    checkpoint's metadata. HTFT on/off is the checkpoint's own (the variant decided it at training time)."""
    from stage.latents.conditions import ConditionEncoder
    from stage.model import build_model

    meta, shapes = read_header(model_path, REEXPORT)
    htft = meta.get("model", {}).get("htft") if isinstance(meta.get("model"), dict) else None
    if not all(isinstance(meta.get(k), dict) for k in ("model", "diffusion", "backbone")) or not isinstance(htft, dict):
        raise StageError(f"{model_path} carries no model/diffusion config metadata: it was not written by "
                         "stage.model.save_checkpoint (`stage train`)")
    expect_cfg = json.loads(json.dumps(config))
    expect_cfg["model"]["htft"]["enabled"] = bool(htft.get("enabled"))
    problems = []
    if not expect_cfg["model"].get("pretrained_unet"):  # else the architecture comes from files, not the config
        with torch.device("meta"):
            expected = {k: list(v.shape) for k, v in build_model(expect_cfg).state_dict().items()}
        problems.append(shape_problems(model_path, shapes, expected))
    cmeta, cshapes = read_header(cond_path, REEXPORT)
    with torch.device("meta"):
        cexpected = {k: list(v.shape) for k, v in ConditionEncoder(
            config["conditions"], int(meta["backbone"].get("out_channels", 4))).state_dict().items()}
    problems.append(shape_problems(cond_path, cshapes, cexpected))
    problems = [p for p in problems if p]
    if problems:
        keys = config_differences(meta["model"], expect_cfg["model"], "model")
        if "conditions" in cmeta:
            keys += config_differences(cmeta["conditions"], config["conditions"], "conditions")
        what = "; ".join(problems)
        raise StageError(f"checkpoint {model_path.parent} was trained with another config ({what}). Config keys that "
                         f"differ: {'; '.join(keys[:8]) or 'none found in the stored metadata'}. Roll out with the "
                         "config the checkpoint was trained with, or the checkpoint of this config.")
    return meta


def load_for_rollout(path: str | Path, config: dict, device="cpu"):
    """(model in eval mode, condition encoder, {"path", "sha256", "htft", "metadata"})."""
    from stage.model import load_trained

    model_path, cond_path = checkpoint_files(path)
    meta = check_against_config(model_path, cond_path, config)
    model, conditions = load_trained(model_path.parent, config, device)
    model.eval().requires_grad_(False)
    conditions.eval().requires_grad_(False)
    info = {"path": str(model_path.parent), "sha256": file_digest(model_path, cond_path),
            "htft": bool(model.htft_enabled), "train": {k: meta[k] for k in meta if k.startswith("train_")}}
    return model, conditions, info
