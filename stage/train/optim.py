"""AdamW over one stage's trainable weights; a linear learning-rate warm-up, then constant or cosine (nanoGPT-style
get_lr)."""

from __future__ import annotations

import math

import torch

from stage.model import param_groups


def build_optimizer(model, conditions, stage: int, stage_cfg: dict, train_cfg: dict) -> torch.optim.AdamW:
    """AdamW over `param_groups(model, stage)` (+ the learned condition encoders where the stage trains them).

    Freezes everything else (requires_grad False), so DDP only syncs what trains.
    """
    wd = train_cfg["weight_decay"]
    groups = param_groups(model, stage, weight_decay=wd)
    cond_params = [p for p in conditions.parameters()]
    train_cond = stage_cfg["train_condition_encoders"] and bool(cond_params)
    for p in cond_params:
        p.requires_grad_(train_cond)
    if train_cond:
        groups.append({"params": [p for p in cond_params if p.dim() >= 2], "weight_decay": wd, "name": "conditions_decay"})
        groups.append({"params": [p for p in cond_params if p.dim() < 2], "weight_decay": 0.0,
                       "name": "conditions_no_decay"})
    groups = [g for g in groups if g["params"]]
    return torch.optim.AdamW(groups, lr=stage_cfg["lr"], betas=tuple(train_cfg["betas"]), eps=train_cfg["eps"])


def lr_at(step: int, stage_cfg: dict) -> float:
    """Linear warm-up from lr/warmup to lr over `warmup_steps` [paper: 10k warm-up], then `lr_schedule`: constant
    [paper: no decay said], or a cosine from lr down to 0 at the run's last step [ours]."""
    lr, warm, total = stage_cfg["lr"], stage_cfg["warmup_steps"], stage_cfg["steps"]
    if step < warm:
        return lr * (step + 1) / warm
    if stage_cfg["lr_schedule"] == "constant" or total <= warm:
        return lr
    return lr * 0.5 * (1.0 + math.cos(math.pi * (step - warm) / (total - warm)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr
