"""Training checkpoints and trained weights, safetensors + JSON only (nothing is ever pickled).

    <out>/checkpoints/step-0000200/         one complete checkpoint (written as .tmp-step-0000200, then renamed)
        model.safetensors                   StageModel weights (stage.model.save_checkpoint: config in metadata)
        conditions.safetensors              learned box / anchor encoder weights
        optimizer.safetensors               AdamW state tensors, keyed "<param index>.<name>"
        extra-rank<r>.safetensors           per-rank tensors: RNG state, stage-3 pool of generated inputs
        state.json                          step, optimizer scalars / param groups, loop and data position
    <out>/model.safetensors, <out>/conditions.safetensors   the final weights (what --init and rollouts read)

A directory is complete once its name has no leading dot: a run killed at any moment leaves the last
renamed checkpoint intact, and `latest_checkpoint` never sees a half-written one.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file, save_model

from stage.errors import StageError
from stage.model import StageModel, save_checkpoint

PREFIX = "step-"


def _tensors_of_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{idx}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for key, v in list(tensors.items()) + list(meta["scalars"].items()):
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = v
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _save_conditions(conditions: torch.nn.Module, path: Path, config: dict) -> None:
    meta = {"conditions": json.dumps(config["conditions"])}
    if any(True for _ in conditions.state_dict()):
        save_model(conditions, str(path), metadata=meta)
    else:  # frozen CLIP encoders: nothing to store, but keep the file so loaders need no special case
        save_file({}, str(path), metadata=meta)


def save_training_checkpoint(root: Path, step: int, model: StageModel, conditions: torch.nn.Module,
                             optimizer: torch.optim.Optimizer, state: dict, extra: dict[str, torch.Tensor],
                             config: dict, rank: int = 0, barrier=lambda: None, keep: int = 2) -> Path:
    """Write checkpoint `step` atomically. Every rank calls it (each writes its own extra tensors)."""
    root = Path(root)
    final = root / f"{PREFIX}{step:07d}"
    tmp = root / f".tmp-{PREFIX}{step:07d}"
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    barrier()
    save_file({k: v.detach().cpu().contiguous() for k, v in extra.items()}, str(tmp / f"extra-rank{rank}.safetensors"))
    barrier()
    if rank == 0:
        save_checkpoint(model, tmp / "model.safetensors", extra={"train_step": step})
        _save_conditions(conditions, tmp / "conditions.safetensors", config)
        opt_tensors, opt_meta = _tensors_of_optimizer(optimizer)
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        (tmp / "state.json").write_text(json.dumps({"step": step, "optimizer": opt_meta, **state}, indent=1))
        shutil.rmtree(final, ignore_errors=True)  # a re-run of the same step after a crash
        os.replace(tmp, final)  # the commit point: the checkpoint exists as a whole or not at all
        for old in list_checkpoints(root)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def list_checkpoints(root: Path) -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and (p / "state.json").is_file())


def latest_checkpoint(root: Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def remove_stale_temporaries(root: Path) -> None:
    for p in Path(root).glob(f".tmp-{PREFIX}*") if Path(root).is_dir() else []:
        shutil.rmtree(p, ignore_errors=True)


def load_training_checkpoint(path: Path, model: StageModel, conditions: torch.nn.Module,
                             optimizer: torch.optim.Optimizer, rank: int = 0) -> tuple[dict, dict[str, torch.Tensor]]:
    """Restore weights and optimizer in place; return (state.json, this rank's extra tensors)."""
    path = Path(path)
    state = json.loads((path / "state.json").read_text())
    model.load_state_dict(load_file(str(path / "model.safetensors")), strict=True)
    conditions.load_state_dict(load_file(str(path / "conditions.safetensors")), strict=True)
    _load_optimizer(optimizer, load_file(str(path / "optimizer.safetensors")), state["optimizer"])
    extra_path = path / f"extra-rank{rank}.safetensors"
    extra = load_file(str(extra_path)) if extra_path.is_file() else {}
    return state, extra


def export_weights(out: Path, model: StageModel, conditions: torch.nn.Module, config: dict, meta: dict) -> None:
    """The run's final weights: <out>/model.safetensors and <out>/conditions.safetensors (each written then renamed)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp_model, tmp_cond = out / ".model.safetensors.tmp", out / ".conditions.safetensors.tmp"
    save_checkpoint(model, tmp_model, extra=meta)
    _save_conditions(conditions, tmp_cond, config)
    os.replace(tmp_cond, out / "conditions.safetensors")
    os.replace(tmp_model, out / "model.safetensors")


def load_init(directory: Path, model: StageModel, conditions: torch.nn.Module) -> None:
    """Start from an earlier stage's weights (`--init DIR`).

    HTFT fusion weights may be missing (stage 1 trained without them: they keep their identity init)
    or unexpected (a no_htft model starting from a run that had them): every other weight must match.
    """
    directory = Path(directory)
    mpath, cpath = directory / "model.safetensors", directory / "conditions.safetensors"
    if not mpath.is_file():
        raise StageError(f"--init {directory}: no model.safetensors there; point it at the --out of the previous "
                         "training stage (run `stage train --stage N-1` first)")
    weights = load_file(str(mpath))
    own = model.state_dict()
    fusion = "unet.htft."
    missing = [k for k in own if k not in weights and not k.startswith(fusion)]
    unexpected = [k for k in weights if k not in own and not k.startswith(fusion)]
    wrong = [k for k in own if k in weights and weights[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        raise StageError(f"--init {directory}: its model does not match the configured one (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}, shape mismatch {wrong[:3]}); train it with the same "
                         "`model` config section")
    model.load_state_dict({k: v for k, v in weights.items() if k in own}, strict=False)
    if cpath.is_file():
        cw = load_file(str(cpath))
        if set(cw) != set(conditions.state_dict()):
            raise StageError(f"--init {directory}: conditions.safetensors does not match the `conditions` config")
        conditions.load_state_dict(cw, strict=True)


def load_trained(directory: str | Path, config: dict | None = None, device: str = "cpu"):
    """(StageModel, ConditionEncoder) of a finished training run's --out directory, for rollouts.

    config: the full config (its `conditions` section builds the encoder); default: the one stored in the files.
    """
    from safetensors import safe_open

    from stage.latents.conditions import build_condition_encoder
    from stage.model import load_checkpoint

    directory = Path(directory)
    model = load_checkpoint(directory / "model.safetensors", device=device)
    with safe_open(str(directory / "conditions.safetensors"), framework="pt") as f:
        cond_cfg = json.loads((f.metadata() or {})["conditions"])
    if config is not None:
        cond_cfg = config["conditions"]
    conditions = build_condition_encoder(cond_cfg, model.unet.unet.config.out_channels, device)
    cw = load_file(str(directory / "conditions.safetensors"), device=device)
    conditions.load_state_dict(cw, strict=True)
    return model, conditions


