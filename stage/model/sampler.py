"""Generate one frame: a full EDM Euler sampling pass with one StreamingBuffer per denoising step.

Frame T starts from fresh noise (x = sigma_max-scaled Gaussian, drawn from the given generator, around the
condition frame with `diffusion.target: residual`) and
runs every step of diffusers' EDMEulerScheduler; at step t the UNet reads and writes `buffers[t]`, so
the features it stores are those of frame T at step t (the grid of the paper's HTFT). Without churn
the sampler is deterministic given the generator. With `diffusion.anchor_channel_means` the sampled latent's
channel means are then set to those of the last real frame its chain was given (the caller's `reference`):
a small model's errors otherwise add up to a colour drift over hundreds of frames.

A batch of independent streams (rollouts of several scenes / seeds at once) passes one generator per
stream: each stream's noise is drawn from its own generator with shape (1, C, h, w), so it does not
depend on which other streams share the batch.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch

from stage.model.denoiser import FrameConditions, StageModel, inference_conditions
from stage.model.diffusion import make_scheduler
from stage.model.streaming_buffer import StepBuffers


def new_buffers(model: StageModel, num_steps: int | None = None, dtype: torch.dtype | None = None
                ) -> StepBuffers | None:
    """Empty per-step buffers for a rollout, their entries kept in `dtype` (None when HTFT is off: nothing would
    read them)."""
    if not model.htft_enabled:
        return None
    steps = num_steps or model.diffusion_cfg["num_steps"]
    return StepBuffers(steps, model.model_cfg["htft"]["buffer_size"], dtype)


def initial_noise(ref: torch.Tensor, generator: torch.Generator | Sequence[torch.Generator] | None) -> torch.Tensor:
    """Standard Gaussian noise shaped like `ref` (B, C, h, w); a sequence of B generators gives row i from
    generator i alone."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(ref.shape, generator=generator, device=ref.device, dtype=ref.dtype)
    if len(generator) != ref.shape[0]:
        raise ValueError(f"{len(generator)} generators for a batch of {ref.shape[0]}")
    return torch.cat([torch.randn((1, *ref.shape[1:]), generator=g, device=ref.device, dtype=ref.dtype)
                      for g in generator])


def anchor_channel_means(latent: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """`latent` (B, C, h, w) with each channel's spatial mean replaced by `reference`'s."""
    return latent - latent.mean((-2, -1), keepdim=True) + reference.to(latent.dtype).mean((-2, -1), keepdim=True)


def step_sigmas(diffusion_cfg: dict, num_steps: int) -> torch.Tensor:
    """(num_steps,) the noise levels one sampling pass evaluates the denoiser at (without the final 0)."""
    scheduler = make_scheduler(diffusion_cfg)
    scheduler.set_timesteps(num_steps)
    return scheduler.sigmas[:-1].clone()


@torch.no_grad()
def sample_frame(model: StageModel, cond: FrameConditions, buffers: StepBuffers | None = None,
                 num_steps: int | None = None,
                 generator: torch.Generator | Sequence[torch.Generator] | None = None,
                 reference: torch.Tensor | None = None) -> torch.Tensor:
    """Sample frame T's latent (B, 4, h, w) given its conditions and the per-step buffers.

    Args:
        model: the StageModel (put it in eval mode yourself).
        cond: frame T's conditions (cond_latent gives B, h, w).
        buffers: StepBuffers with one buffer per step (`new_buffers`), or None (no temporal memory).
        num_steps: sampling steps; default `diffusion.num_steps`. Must equal len(buffers).
        generator: source of the initial noise: one generator, or one per batch row (independent streams).
        reference: (B, C, h, w) the last real latent this chain was given; with
            `diffusion.anchor_channel_means` the sample takes its channel means (anchor_channel_means).
    """
    num_steps = num_steps or model.diffusion_cfg["num_steps"]
    if buffers is not None and len(buffers) != num_steps:
        raise ValueError(f"{len(buffers)} step buffers for {num_steps} sampling steps")
    scheduler = copy.deepcopy(model.scheduler)  # the scheduler is stateful (step index)
    scheduler.set_timesteps(num_steps)
    scheduler.is_scale_input_called = True  # StageModel.denoise applies c_in itself; silences diffusers' warning
    # the CF's noise first (level mode), from the streams' generators, then the initial noise
    cond = inference_conditions(cond, model.model_cfg["cond_frame_noise"],
                                lambda cf=cond.cond_latent: initial_noise(cf, generator))
    ref = cond.cond_latent
    x = initial_noise(ref, generator) * scheduler.init_noise_sigma
    centre = model.reference(cond)
    if centre is not None:  # the residual's diffusion starts around the condition frame
        x = x + centre
    for step, t in enumerate(scheduler.timesteps):
        sigma = scheduler.sigmas[step]
        denoised = model.denoise(x, sigma.to(ref.device), cond, buffers[step] if buffers is not None else None)
        # the scheduler's Euler step from the denoised estimate (preconditioning already applied)
        x = scheduler.step(denoised, t, x, pred_original_sample=denoised).prev_sample
    # a checkpoint written before the key existed was trained and rolled out without it
    if reference is not None and model.diffusion_cfg.get("anchor_channel_means", False):
        x = anchor_channel_means(x, reference)
    return x
