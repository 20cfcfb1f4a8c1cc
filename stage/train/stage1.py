"""Stage 1, streaming learning [paper]: random pairs of consecutive real frames; CF = real frame T-1.

No StreamingBuffer (HTFT unused, its fusion modules frozen); every UNet weight and the learned
condition encoders train. HTFT plays no part, so one stage-1 run serves every ablation variant.
"""

from __future__ import annotations

from stage.latents.datasets import PairDataset
from stage.train.data import indices_for_step, pair_batch


class StageRunner:
    """Defaults for what a stage adds to the loop: no state beyond the step, no extra logs."""

    def __init__(self, trainer):
        self.t = trainer

    def state(self) -> dict:
        return {}

    def state_tensors(self) -> dict:
        return {}

    def check_state(self, state: dict, tensors: dict, state_file, tensors_file) -> None:
        """StageError naming the file when a checkpoint's runner state cannot be loaded (before anything is)."""

    def load_state(self, state: dict, tensors: dict) -> None:
        pass

    def truncate_logs(self, step: int) -> None:
        pass

    def metrics(self) -> dict:
        return {}


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
