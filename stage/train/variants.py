"""Ablation variants: which training stages a variant's model went through, with HTFT on or off.

The `train.variants` config table says, per variant: `htft` (fusion modules and buffers on/off),
`last_stage` (the stage whose checkpoint is the variant's model) and `trained_as` (null = trained by
its own stage-2/3 runs; else the name of the variant whose stage-`last_stage` checkpoint it reuses).

Stage 1 never uses HTFT (no buffer, fusion modules frozen), so ONE stage-1 run serves every variant;
`--variant` only matters for stages 2 and 3. With the default table:

    full         1 + 2 + 3, HTFT on          (trains stages 2 and 3)
    no_htft      1 + 2 + 3, HTFT off         (trains stages 2 and 3, same steps as full)
    stages_1_2   = full's stage-2 checkpoint (no runs of its own)
    stage1_only  = the shared stage-1 checkpoint
    no_htft_1_2  = no_htft's stage-2 checkpoint (the control of stages_1_2: HTFT's effect at stage 2)
"""

from __future__ import annotations

import copy

from stage.errors import StageError


def get_variant(config: dict, name: str) -> dict:
    table = config["train"]["variants"]
    if name not in table:
        raise StageError(f"unknown training variant '{name}'; train.variants defines: {', '.join(sorted(table))}")
    return table[name]


def check_runnable(config: dict, stage: int, name: str | None) -> dict | None:
    """The variant entry if `stage` trains for variant `name`; StageError with the checkpoint to use if not."""
    if stage == 1:
        return get_variant(config, name) if name else None  # shared by every variant; htft is ignored
    if not name:
        raise StageError(f"stage {stage} needs --variant (one of {', '.join(sorted(config['train']['variants']))})")
    v = get_variant(config, name)
    if v["trained_as"]:
        raise StageError(f"variant '{name}' has no stage-{stage} run of its own: it is the stage-{v['last_stage']} "
                         f"checkpoint of variant '{v['trained_as']}' (train.variants.{name}.trained_as)")
    if stage > v["last_stage"]:
        raise StageError(f"variant '{name}' stops after stage {v['last_stage']} (train.variants.{name}.last_stage)")
    return v


def checkpoint_source(config: dict, name: str) -> tuple[str | None, int]:
    """(variant whose run holds `name`'s final model, stage); variant None = the shared stage-1 run."""
    v = get_variant(config, name)
    stage = v["last_stage"]
    owner = v["trained_as"] or name
    return (None if stage == 1 else owner), stage


def model_config_for(config: dict, stage: int, variant: dict | None) -> dict:
    """The config the model is built from: the variant's htft switch for stages 2-3, the config's own for stage 1."""
    config = copy.deepcopy(config)
    if stage > 1 and variant is not None:
        config["model"]["htft"]["enabled"] = bool(variant["htft"])
    return config
