"""Three-stage training of STAGE's denoiser on the latent cache (stage/latents) [paper "Three-stage training"].

    stage train --stage 1 --cache C --out runs/stage1                                  # shared by every variant
    stage train --stage 2 --variant full --cache C --init runs/stage1 --out runs/full/stage2
    stage train --stage 3 --variant full --cache C --init runs/full/stage2 --out runs/full/stage3
    torchrun --nproc_per_node 4 -m stage train ...                                      # DDP, same command

Python:

    from stage.model import load_trained
    from stage.train import Trainer
    Trainer(config, stage=2, variant="full", cache_dir=C, out=O, init=I, resume=True).run()
    model, conditions = load_trained(O)          # finished run -> StageModel + condition encoders

Modules: loop.py (the loop), stage1/2/3.py (what one step does), data.py (batches as a pure function of
seed and step), optim.py (AdamW + warm-up), checkpointing.py (atomic safetensors checkpoints, --init),
distributed.py (torchrun), variants.py (the ablation table: one stage-1 run serves every variant).
"""


def __getattr__(name):  # lazy: `stage --help` must not import torch
    if name == "Trainer":
        from stage.train.loop import Trainer
        return Trainer
    if name in ("checkpoint_source", "get_variant"):
        from stage.train import variants
        return getattr(variants, name)
    raise AttributeError(name)
