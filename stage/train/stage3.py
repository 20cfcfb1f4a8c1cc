"""Stage 3, learning through simulated inference [paper, dev].

Collect: the model rolls windows out with its own sampler (`sample_frame`, no grad, per-step
StreamingBuffers, the rollouts' steps) and conditions each frame on its own previous output,
except that every W-th frame of the window (j % W == 0, so always the first) gets the real previous
frame. W starts at `w_start` and doubles every `w_double_every` steps up to `w_max` [dev: from 2,
doubling]; each generated frame is anchored to the channel means of the latest real one, as the rollouts
anchor theirs to the first (`diffusion.anchor_channel_means`). A collection holds `collect_samples` frames
[dev: 500], as whole windows.
Train: the pool's windows are streamed as in stage 2 (one sigma per window, the ordinary loss, lead-in
frames first), except that each frame's condition frame is the one used in the rollout (the lead-in
frames are rolled out too) and, with `buffer_source: generated` [ours], the buffer holds the features of
the generated frames at one of the sampler's noise levels, as at rollout; `real` [dev] keeps stage 2's
buffer of noised real frames. When the pool is used up, the next step collects a new one with the
current weights. The pool is part of the
checkpoint, so a resumed run trains on the very samples the original would have.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from stage.errors import StageError
from stage.model import new_buffers, precision, sample_frame
from stage.readback import field
from stage.train.data import frame_conditions, frame_of, indices_for_step, window_batch
from stage.train.csv_log import append_csv, truncate_csv
from stage.model.sampler import step_sigmas
from stage.train.stage2 import Stage2, stream_loss

POOL = ("pool_index", "pool_cond", "pool_real", "pool_generated")  # what a checkpoint holds of the pool
COLLECT_FIELDS = ("collection", "step", "W", "windows", "frames", "real_cf_fraction", "sources")


def w_at(step: int, cfg: dict) -> int:
    """Curriculum: real condition frame every W frames, W = w_start x 2^(step // w_double_every), capped at w_max."""
    return min(cfg["w_max"], cfg["w_start"] * 2 ** (step // cfg["w_double_every"]))


@torch.no_grad()
def rollout_window(model, conditions, window: dict, w: int, num_steps: int,
                   generator: torch.Generator | None = None, precision_name: str = "fp32"
                   ) -> tuple[torch.Tensor, list[bool], torch.Tensor]:
    """Simulated inference over a window batch (B, T, ...), at `precision_name` (the run's train.precision).

    Returns (condition latents used (B, T, C, h, w), real_cf per frame (True = real previous frame),
    generated latents (B, T, C, h, w)).
    """
    was_training = model.training, conditions.training
    model.eval()
    conditions.eval()
    buffers = new_buffers(model, num_steps, precision.compute_dtype(precision_name))  # None with HTFT off
    n = window["latent"].shape[1]
    used, real, generated = [], [], []
    for j in range(n):
        use_real = j % w == 0  # the real frame replaces the model's own every W frames
        cf = window["prev_latent"][:, j] if use_real else generated[-1]
        last_real = cf if use_real else last_real
        cond = frame_conditions(conditions, frame_of(window, j), cf)
        with precision.autocast(window["latent"].device, precision_name):
            generated.append(sample_frame(model, cond, buffers, num_steps=num_steps, generator=generator,
                                          reference=last_real))
        used.append(cf)
        real.append(use_real)
    model.train(was_training[0])
    conditions.train(was_training[1])
    return torch.stack(used, 1), real, torch.stack(generated, 1)


class Stage3(Stage2):
    def __init__(self, trainer):
        super().__init__(trainer)  # the windows with their lead-in, and the buffer count
        cfg = trainer.stage_cfg
        length = cfg["window"] or min(trainer.cache.shards[s].n_frames for s, _, _ in self.windows.items) - self.lead_in
        self.n_windows = max(1, math.ceil(cfg["collect_samples"] / length))
        self.pool_index = self.pool_cond = self.pool_real = self.pool_generated = None
        self.pool_pos, self.collections, self.w = 0, 0, None
        self.log = trainer.out / "stage3_collections.csv"
        self.sampling_steps = cfg["sampling_steps"] or trainer.model.diffusion_cfg["num_steps"]  # the rollouts' sampler
        self.levels = step_sigmas(trainer.model.diffusion_cfg, self.sampling_steps).to(trainer.device)

    def collect(self, step: int, generator) -> None:
        t, cfg = self.t, self.t.stage_cfg
        self.w = w_at(step, cfg)
        idx = indices_for_step(len(self.windows), self.n_windows, t.seed, self.collections, t.dist.rank,
                               t.dist.world_size, salt="stage3-collect")
        conds, reals, gens = [], [], []
        for a in range(0, len(idx), cfg["batch_size"]):
            window = window_batch(self.windows, idx[a:a + cfg["batch_size"]], t.device)
            used, real, generated = rollout_window(t.model, t.conditions, window, self.w, self.sampling_steps,
                                                   generator, t.train_cfg["precision"])
            conds.append(used.cpu())
            gens.append(generated.cpu())
            reals += [real] * used.shape[0]
        self.pool_index = torch.tensor(idx, dtype=torch.int64)
        self.pool_cond = torch.cat(conds)
        self.pool_generated = torch.cat(gens)
        self.pool_real = torch.tensor(reals, dtype=torch.bool)
        self.pool_pos = 0
        self.collections += 1
        if t.dist.is_main:
            sources = "".join("R" if r else "G" for r in reals[0])
            append_csv(self.log, COLLECT_FIELDS, {
                "collection": self.collections, "step": step, "W": self.w, "windows": len(idx),
                "frames": int(self.pool_real.numel()), "real_cf_fraction": f"{self.pool_real.float().mean():.4f}",
                "sources": sources})

    def train_step(self, step, generator):
        t = self.t
        if self.pool_index is None or self.pool_pos >= len(self.pool_index):
            self.collect(step, generator)
        sel = slice(self.pool_pos, self.pool_pos + t.stage_cfg["batch_size"])
        self.pool_pos = min(self.pool_pos + t.stage_cfg["batch_size"], len(self.pool_index))
        window = window_batch(self.windows, self.pool_index[sel].tolist(), t.device)
        generated = self.pool_generated[sel].to(t.device) if t.stage_cfg["buffer_source"] == "generated" else None
        return self.count(stream_loss(t, window, self.pool_cond[sel].to(t.device), generator, self.lead_in,
                                      generated, self.levels))

    # checkpointed: the pool and where the loop is in it
    def state(self) -> dict:
        return {"pool_pos": self.pool_pos, "collections": self.collections, "W": self.w}

    def state_tensors(self) -> dict:
        if self.pool_index is None:
            return {}
        return {"pool_index": self.pool_index, "pool_cond": self.pool_cond, "pool_real": self.pool_real,
                "pool_generated": self.pool_generated}

    def check_state(self, state: dict, tensors: dict, state_file, tensors_file) -> None:
        from stage.train.checkpointing import CHECKPOINT_FIX

        for key in ("pool_pos", "collections"):
            if field(state, key, state_file, CHECKPOINT_FIX, int) < 0:
                raise StageError(f"{state_file}: field 'runner.{key}' is negative; {CHECKPOINT_FIX}")
        field(state, "W", state_file, CHECKPOINT_FIX, (int, type(None)))
        problem = self._pool_problem(tensors, state["pool_pos"])
        if problem:
            raise StageError(f"{tensors_file}: its stage-3 pool {problem}; {CHECKPOINT_FIX}")

    def _pool_problem(self, tensors: dict, pool_pos: int) -> str | None:
        held = [k for k in POOL if k in tensors]
        if not held:
            return None
        if len(held) < len(POOL):
            return f"holds {held}, not all of {list(POOL)}"
        index, cond, real, generated = (tensors[k] for k in POOL)
        if index.dtype != torch.int64 or real.dtype != torch.bool or index.dim() != 1 or cond.dim() != 5:
            return f"tensors have the wrong dtype or rank ({index.dtype} {index.dim()}-d, {real.dtype}, {cond.dim()}-d)"
        if cond.shape[0] != index.shape[0] or list(real.shape) != list(cond.shape[:2]) or generated.shape != cond.shape:
            return (f"tensors disagree in size ({list(index.shape)}, {list(cond.shape)}, {list(real.shape)}, "
                    f"{list(generated.shape)})")
        if pool_pos > len(index):
            return f"has {len(index)} windows, fewer than the recorded position {pool_pos}"
        if len(index) and not (0 <= int(index.min()) and int(index.max()) < len(self.windows)):
            return f"names windows outside the cache's {len(self.windows)}"
        return None

    def load_state(self, state: dict, tensors: dict) -> None:
        self.pool_pos, self.collections, self.w = state["pool_pos"], state["collections"], state["W"]
        if "pool_index" in tensors:
            self.pool_index, self.pool_cond, self.pool_real, self.pool_generated = (tensors[k] for k in POOL)

    def truncate_logs(self, step: int) -> None:
        if step == 0:
            Path(self.log).unlink(missing_ok=True)
        truncate_csv(Path(self.log), "collection", self.collections)

    def metrics(self) -> dict:
        return {**super().metrics(), "stage3_collections": self.collections, "stage3_final_W": self.w}
