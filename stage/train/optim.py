"""AdamW over one stage's trainable weights, with a linear learning-rate warm-up (nanoGPT-style get_lr)."""

from __future__ import annotations

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
    """Linear warm-up from lr/warmup to lr over `warmup_steps`, then constant [paper: 10k warm-up; no decay said]."""
    warm = stage_cfg["warmup_steps"]
    return stage_cfg["lr"] * min(1.0, (step + 1) / warm) if warm > 0 else stage_cfg["lr"]


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr
