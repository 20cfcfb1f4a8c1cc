"""Stage 2, HTFT learning [paper]: windows of a scene streamed in time order through a StreamingBuffer.

One noise level per window (drawn per sample), so the buffered features of frames T-1, T-5, ... were
computed at the same sigma as frame T: the buffer a sampling step reads at inference. The CF is the
real previous frame. The loss of each frame is back-propagated at once (its graph freed), gradients
accumulate over the window, and the optimizer steps once per window: a step is atomic, so no buffer
state is ever checkpointed. Each window is led in by `lead_in` frames that only fill the buffer, so its
trained frames read a full buffer, as at rollout [ours; the development code streams whole scenes].
Encoder frozen; middle block, decoder and fusion train (param_groups stage 2).
"""

from __future__ import annotations

import torch

from stage.errors import StageError
from stage.latents.datasets import SceneStreamDataset
from stage.model import precision
from stage.model.diffusion import sample_sigmas
from stage.model.denoiser import inference_conditions
from stage.model.streaming_buffer import ReadOnlyBuffer, StreamingBuffer
from stage.train.data import frame_conditions, frame_of, indices_for_step, window_batch
from stage.train.runner import StageRunner


def lead_in_frames(trainer) -> int:
    """Frames streamed before each trained window (`train.stage<k>.lead_in`; null = the buffer's size)."""
    lead = trainer.stage_cfg["lead_in"]
    return trainer.config["model"]["htft"]["buffer_size"] if lead is None else lead


def make_windows(trainer, window: int | None) -> SceneStreamDataset:
    """Runs of lead-in + `window` frames (whole scenes with window null: their first frames lead in)."""
    lead = lead_in_frames(trainer)
    ds = SceneStreamDataset(trainer.cache, window=None if window is None else lead + window)
    if len(ds) == 0:
        raise StageError(f"no scene of the cache {trainer.cache.dir} has train.stage{trainer.stage}.window + lead_in "
                         f"= {window} + {lead} frames; lower the window or the lead-in")
    if window is None and trainer.stage_cfg["batch_size"] != 1:
        raise StageError(f"train.stage{trainer.stage}.window null streams whole scenes of different lengths: "
                         "set batch_size 1 or a window length")
    return ds


def stream_loss(trainer, window: dict, cond_latents: torch.Tensor, generator, lead_in: int = 0,
                generated: torch.Tensor | None = None, levels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Forward + backward over a window batch (B, T, ...) in time order; returns the mean per-frame losses
    and `buffer_full`, the share of trained frames whose every selected offset held a past frame.

    cond_latents (B, T, C, h, w): the condition frame of each frame (real in stage 2, mostly generated in 3).
    lead_in: the first frames only fill the buffer (no grad, no loss), so the trained frames find it full as
    at rollout, where it is full for all but the first `buffer_size` frames. Skipped without HTFT.
    generated (B, T, C, h, w): the model's own frames (stage 3, `buffer_source: generated`): the buffer then
    holds their features, at one of the sampler's noise levels `levels` drawn per window, as a rollout's
    buffers do; otherwise it holds the trained frames' own (noised real frames at a log-normal sigma).
    """
    model = trainer.model
    b, n = window["latent"].shape[:2]
    d = model.diffusion_cfg
    if generated is None:
        sigma = sample_sigmas(b, d["p_mean"], d["p_std"], generator, trainer.device)  # one noise level per window
    else:
        sigma = levels[torch.randint(len(levels), (b,), generator=generator, device=trainer.device)]
    dtype = precision.compute_dtype(trainer.train_cfg["precision"])
    buffer = StreamingBuffer(model.model_cfg["htft"]["buffer_size"], dtype) if model.htft_enabled else None
    read = ReadOnlyBuffer(buffer) if buffer is not None and generated is not None else buffer
    reach = -min(model.model_cfg["htft"]["offsets"])
    totals = {k: torch.zeros((), device=trainer.device) for k in ("loss", "l2", "hf")}
    trained, full = n - lead_in, 0
    for j in range(n):
        if j >= lead_in:
            full += buffer is not None and len(buffer) >= reach
            # back-propagated at once; gradients all-reduced once, with the window's last frame
            with trainer.no_sync() if j < n - 1 else torch.enable_grad():
                out = trainer.ddp(frame_of(window, j), cond_latents[:, j], sigma=sigma, buffer=read,
                                  generator=generator)
                trainer.backward(out["loss"] / trained)
            for k in totals:
                totals[k] += out[k].detach() / trained
        elif buffer is not None and generated is None:  # a lead-in frame fills the buffer with its own features
            with torch.no_grad():
                trainer.module(frame_of(window, j), cond_latents[:, j], sigma=sigma, buffer=buffer, generator=generator)
        if buffer is not None and generated is not None:
            buffer.push(_generated_features(trainer, window, cond_latents, generated, j, sigma, generator))
    totals["buffer_full"] = torch.tensor(full / trained)
    return totals


@torch.no_grad()
def _generated_features(trainer, window, cond_latents, generated, j, sigma, generator) -> list[torch.Tensor]:
    """Skip features of generated frame j noised to `sigma`, under the conditions it was generated with."""
    model = trainer.model
    cond = inference_conditions(frame_conditions(trainer.conditions, frame_of(window, j), cond_latents[:, j]),
                                model.model_cfg["cond_frame_noise"], lambda: torch.zeros_like(cond_latents[:, j]))
    x = generated[:, j] + sigma.view(-1, 1, 1, 1) * torch.randn(generated[:, j].shape, generator=generator,
                                                                device=generated.device, dtype=generated.dtype)
    with trainer.autocast():
        return model.skip_features(x, sigma, cond)


class Stage2(StageRunner):
    def __init__(self, trainer):
        super().__init__(trainer)
        self.windows = make_windows(trainer, trainer.stage_cfg["window"])
        self.lead_in = lead_in_frames(trainer)
        self.full = []  # per step: the share of trained frames that found the buffer full

    def count(self, losses: dict) -> dict:
        self.full.append(float(losses["buffer_full"]))
        return losses

    def metrics(self) -> dict:
        share = sum(self.full) / len(self.full) if self.full and self.t.model.htft_enabled else None
        return {"lead_in_frames": self.lead_in, "buffer_full_share": share}

    def train_step(self, step, generator):
        t = self.t
        idx = indices_for_step(len(self.windows), t.stage_cfg["batch_size"], t.seed, step, t.dist.rank,
                               t.dist.world_size)
        window = window_batch(self.windows, idx, t.device)
        return self.count(stream_loss(t, window, window["prev_latent"], generator, self.lead_in))
