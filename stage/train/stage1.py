"""Stage 1, streaming learning [paper]: random pairs of consecutive real frames; CF = real frame T-1.

No StreamingBuffer (HTFT unused, its fusion modules frozen); every UNet weight and the learned
condition encoders train. HTFT plays no part, so one stage-1 run serves every ablation variant.
"""

from __future__ import annotations

from stage.latents.datasets import PairDataset
from stage.train.data import indices_for_step, pair_batch
from stage.train.runner import StageRunner


class Stage1(StageRunner):
    def __init__(self, trainer):
        super().__init__(trainer)
        self.pairs = PairDataset(trainer.cache)

    def train_step(self, step, generator):
        t = self.t
        idx = indices_for_step(len(self.pairs), t.stage_cfg["batch_size"], t.seed, step, t.dist.rank,
                               t.dist.world_size)
        batch = pair_batch(self.pairs, idx, t.device)
        out = t.ddp(batch, batch["prev_latent"], generator=generator)  # log-normal sigma per sample, no buffer
        t.backward(out["loss"])
        return {k: out[k].detach() for k in ("loss", "l2", "hf")}
