"""Stage 2, HTFT learning [paper]: windows of a scene streamed in time order through a StreamingBuffer.

One noise level per window (drawn per sample), so the buffered features of frames T-1, T-5, ... were
computed at the same sigma as frame T: the buffer a sampling step reads at inference. The CF is the
real previous frame. The loss of each frame is back-propagated at once (its graph freed), gradients
accumulate over the window, and the optimizer steps once per window: a step is atomic, so no buffer
state is ever checkpointed. Encoder frozen; middle block, decoder and fusion train (param_groups stage 2).
"""

from __future__ import annotations

import torch

from stage.errors import StageError
from stage.latents.datasets import SceneStreamDataset
from stage.model.diffusion import sample_sigmas
from stage.model.streaming_buffer import StreamingBuffer
from stage.train.data import frame_of, indices_for_step, window_batch
from stage.train.stage1 import StageRunner


def make_windows(trainer, window: int | None) -> SceneStreamDataset:
    ds = SceneStreamDataset(trainer.cache, window=window)
    if len(ds) == 0:
        raise StageError(f"no scene of the cache {trainer.cache.dir} has train.stage{trainer.stage}.window = "
                         f"{window} frames; lower the window")
    if window is None and trainer.stage_cfg["batch_size"] != 1:
        raise StageError(f"train.stage{trainer.stage}.window null streams whole scenes of different lengths: "
                         "set batch_size 1 or a window length")
    return ds


def stream_loss(trainer, window: dict, cond_latents: torch.Tensor, generator) -> dict[str, torch.Tensor]:
    """Forward + backward over a window batch (B, T, ...) in time order; returns the mean per-frame losses.

    cond_latents (B, T, C, h, w): the condition frame of each frame (real in stage 2, mostly generated in 3).
    """
    model = trainer.model
    b, n = window["latent"].shape[:2]
    d = model.diffusion_cfg
    sigma = sample_sigmas(b, d["p_mean"], d["p_std"], generator, trainer.device)  # one noise level per window
    buffer = StreamingBuffer(model.model_cfg["htft"]["buffer_size"]) if model.htft_enabled else None
    totals = {k: torch.zeros((), device=trainer.device) for k in ("loss", "l2", "hf")}
    for j in range(n):
        # all-reduce gradients once, with the window's last frame
        ctx = trainer.no_sync() if j < n - 1 else torch.enable_grad()
        with ctx:
            out = trainer.ddp(frame_of(window, j), cond_latents[:, j], sigma=sigma, buffer=buffer, generator=generator)
            (out["loss"] / n).backward()
        for k in totals:
            totals[k] += out[k].detach() / n
    return totals


class Stage2(StageRunner):
    def __init__(self, trainer):
        super().__init__(trainer)
        self.windows = make_windows(trainer, trainer.stage_cfg["window"])

    def train_step(self, step, generator):
        t = self.t
        idx = indices_for_step(len(self.windows), t.stage_cfg["batch_size"], t.seed, step, t.dist.rank,
                               t.dist.world_size)
        window = window_batch(self.windows, idx, t.device)
        return stream_loss(t, window, window["prev_latent"], generator)
