"""Which weights train in each of the three training stages [paper, dev].

- stage 1 (streaming learning): every UNet weight (backbone + anchor attention); HTFT is unused.
- stage 2 (HTFT learning, "model decoupling"): the encoder is frozen; the middle block, the decoder
  and the HTFT fusion modules train. The time embedding (and the condition-noise level's) counts as encoder [ours].
- stage 3 (simulated inference): as stage 2 (`model.stage3_trainable: decoder`) or all of stage 1
  plus HTFT (`all`) [ours].
"""

from __future__ import annotations

from torch import nn

from stage.model.denoiser import StageModel

ENCODER = ("unet.unet.conv_in.", "unet.unet.time_embedding.", "unet.unet.class_embedding.", "unet.unet.down_blocks.")
DECODER = ("unet.unet.mid_block.", "unet.unet.up_blocks.", "unet.unet.conv_norm_out.", "unet.unet.conv_out.")
FUSION = ("unet.htft.",)


def _stage_prefixes(stage: int, stage3_trainable: str) -> tuple[str, ...]:
    if stage == 1:
        return ENCODER + DECODER
    if stage == 2 or (stage == 3 and stage3_trainable == "decoder"):
        return DECODER + FUSION
    if stage == 3:
        return ENCODER + DECODER + FUSION
    raise ValueError(f"training stage must be 1, 2 or 3, got {stage}")


def trainable_names(model: StageModel, stage: int) -> list[str]:
    """Names of the parameters that train in `stage`."""
    prefixes = _stage_prefixes(stage, model.model_cfg["stage3_trainable"])
    return [n for n, _ in model.named_parameters() if n.startswith(prefixes)]


def freeze_for_stage(model: StageModel, stage: int) -> list[nn.Parameter]:
    """Set requires_grad for `stage` (True for its weights, False for all others); return its weights."""
    names = set(trainable_names(model, stage))
    params = []
    for n, p in model.named_parameters():
        p.requires_grad_(n in names)
        if n in names:
            params.append(p)
    return params


def param_groups(model: StageModel, stage: int, weight_decay: float = 0.01) -> list[dict]:
    """Optimizer groups for `stage` (freezes the rest): weights with decay, biases and norms without."""
    params = dict(model.named_parameters())
    freeze_for_stage(model, stage)
    decay, no_decay = [], []
    for n in trainable_names(model, stage):
        (no_decay if params[n].dim() < 2 else decay).append(params[n])
    return [{"params": decay, "weight_decay": weight_decay, "name": f"stage{stage}_decay"},
            {"params": no_decay, "weight_decay": 0.0, "name": f"stage{stage}_no_decay"}]
