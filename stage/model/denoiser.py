"""StageModel: the conditioned, preconditioned denoiser D(x; sigma, conditions) and its training loss.

Conditions of frame T (all tensors, built upstream by stage/latents):
- cond_latent  (B, 4, h, w): latent of the condition frame T-1 (CF)
- map_latent   (B, 4, h, w): latent of frame T's HD-map rendering
- box_tokens   (B, n_box, D): box tokens, zeros for padding
- anchor_tokens(B, 1, D): anchor-frame token; None = zeros (the very first frame)

Training-time augmentation [dev; `model.condition_dropout`, `model.cond_frame_noise`]: the CF latent
gets Gaussian noise, then each of the four conditions is replaced by zeros with probability 0.15,
independently per sample and per condition [ours: zeros as the "dropped" value, noise before dropout].
The CF noise is either
- `fixed` [dev]: std 0.2 in training, unknown to the model, none at inference; or
- `level` [ours; SVD's conditioning augmentation, GameNGen, diffusion forcing]: a level drawn per sample
  in training and told to the model (an embedding added to the time embedding); at inference, and in
  stage 3's simulated inference, the CF gets a small fixed level, so a generated CF looks like the
  slightly noised frames the model learned to read.

Target [ours; `diffusion.target`]: `frame` denoises the next frame's latent itself; `residual` denoises
its difference from the condition frame the model is given, D(x) = cf + D_frame(x - cf), so an
untrained network already predicts "nothing moved" and the small model spends itself on the change.
Where the condition frame is dropped (zeros) the two coincide.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch
from torch import nn
from diffusers import UNet2DConditionModel

from stage.errors import StageError
from stage.model.diffusion import edm_loss, make_scheduler, sample_sigmas
from stage.model.streaming_buffer import StreamingBuffer
from stage.model.unet import StageUNet, build_backbone


@dataclass
class FrameConditions:
    cond_latent: torch.Tensor
    map_latent: torch.Tensor
    box_tokens: torch.Tensor
    anchor_tokens: torch.Tensor | None = None
    cond_noise_level: torch.Tensor | None = None   # (B,): the CF's noise level (`level` mode); None = 0

    def tokens(self, n_anchor_tokens: int = 1) -> torch.Tensor:
        """encoder_hidden_states (B, n_box + n_anchor, D): box tokens then anchor token(s)."""
        anchor = self.anchor_tokens
        if anchor is None:
            b, _, d = self.box_tokens.shape
            anchor = self.box_tokens.new_zeros(b, n_anchor_tokens, d)
        return torch.cat([self.box_tokens, anchor], dim=1)


def _drop(x: torch.Tensor, p: float, generator: torch.Generator | None) -> torch.Tensor:
    """Zero whole samples of x (B, ...) with probability p each."""
    keep = torch.rand(x.shape[0], generator=generator, device=x.device) >= p
    return x * keep.view(-1, *([1] * (x.dim() - 1))).to(x.dtype)


def augment_conditions(cond: FrameConditions, dropout: float, cf_noise: dict,
                       generator: torch.Generator | None = None) -> FrameConditions:
    """Training-time CF noise (`model.cond_frame_noise`) and per-condition dropout (see module docstring)."""
    cf, level = cond.cond_latent, None
    if cf_noise["mode"] == "level":
        level = cf_noise["max_level"] * torch.rand(cf.shape[0], generator=generator, device=cf.device, dtype=cf.dtype)
        cf = cf + level.view(-1, 1, 1, 1) * torch.randn(cf.shape, generator=generator, device=cf.device, dtype=cf.dtype)
    elif cf_noise["std"] > 0:
        cf = cf + cf_noise["std"] * torch.randn(cf.shape, generator=generator, device=cf.device, dtype=cf.dtype)
    if dropout <= 0:
        return replace(cond, cond_latent=cf, cond_noise_level=level)
    anchor = cond.anchor_tokens  # None already means zeros
    return FrameConditions(_drop(cf, dropout, generator), _drop(cond.map_latent, dropout, generator),
                           _drop(cond.box_tokens, dropout, generator),
                           _drop(anchor, dropout, generator) if anchor is not None else None, level)


def inference_conditions(cond: FrameConditions, cf_noise: dict, noise: Callable[[], torch.Tensor]) -> FrameConditions:
    """The CF at inference: in `level` mode noised to `inference_level` with `noise()` (shaped like the CF,
    drawn by the caller from the streams' generators, only where a level is above 0) and the level told to
    the model; else unchanged."""
    if cf_noise["mode"] != "level":
        return cond
    level = cond.cond_latent.new_full((cond.cond_latent.shape[0],), cf_noise["inference_level"])
    cf = cond.cond_latent + cf_noise["inference_level"] * noise() if cf_noise["inference_level"] > 0 else cond.cond_latent
    return replace(cond, cond_latent=cf, cond_noise_level=level)


class StageModel(nn.Module):
    """STAGE's denoiser: StageUNet + EDM v-prediction preconditioning (diffusers EDMEulerScheduler).

    Args:
        unet: the StageUNet.
        model_cfg, diffusion_cfg: the validated `model` and `diffusion` config sections.
    """

    def __init__(self, unet: StageUNet, model_cfg: dict, diffusion_cfg: dict):
        super().__init__()
        self.unet = unet
        self.model_cfg = model_cfg
        self.diffusion_cfg = diffusion_cfg
        with torch.device("cpu"):  # schedule tensors live on the CPU (also when the model is built on meta)
            self.scheduler = make_scheduler(diffusion_cfg)  # preconditioning here; the sampler copies it
        self.n_anchor_tokens = model_cfg["n_anchor_tokens"]

    @classmethod
    def from_config(cls, config: dict, backbone: UNet2DConditionModel | None = None) -> "StageModel":
        """Build from a validated full config (its `model` and `diffusion` sections).

        backbone: a 12-channel diffusers UNet to use instead of building one from `model`.
        """
        m, htft = config["model"], config["model"]["htft"]
        if min(htft["offsets"]) < -htft["buffer_size"]:
            raise StageError(f"model.htft.offsets {htft['offsets']} reach past model.htft.buffer_size "
                             f"{htft['buffer_size']}: each offset must be >= -buffer_size")
        unet = StageUNet(
            backbone if backbone is not None else build_backbone(m),
            htft_enabled=htft["enabled"], htft_offsets=htft["offsets"], htft_heads=htft["heads"],
            htft_norm_groups=htft["norm_groups"], htft_normalize_memory=htft["normalize_memory"],
            n_anchor_tokens=m["n_anchor_tokens"], anchor_zero_init=m["anchor_attention_zero_init"],
        )
        return cls(unet, m, config["diffusion"])

    @property
    def htft_enabled(self) -> bool:
        return self.unet.htft_enabled

    def reference(self, cond: FrameConditions) -> torch.Tensor | None:
        """What the diffusion is relative to: the condition frame (`diffusion.target: residual`), else None."""
        return cond.cond_latent if self.diffusion_cfg["target"] == "residual" else None

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, cond: FrameConditions,
                buffer: StreamingBuffer | None = None) -> torch.Tensor:
        """D(x; sigma): the denoised latent.

        Args:
            x: noisy latent (B, 4, h, w); sigma: (B,) or scalar.
            cond: the frame's conditions.
            buffer: this denoising step's StreamingBuffer (see StageUNet.forward), or None.
        Returns:
            (B, 4, h, w).
        """
        x, sigma, sample, c_noise, level = self._unet_inputs(x, sigma, cond)
        out = self.unet(sample, c_noise, cond.tokens(self.n_anchor_tokens), buffer, level)
        denoised = self.scheduler.precondition_outputs(x, out, sigma.view(-1, 1, 1, 1))
        ref = self.reference(cond)
        return denoised if ref is None else ref + denoised

    def skip_features(self, x: torch.Tensor, sigma: torch.Tensor, cond: FrameConditions) -> list[torch.Tensor]:
        """The skip features denoise(x, sigma, cond) pushes into its StreamingBuffer, without the decoder."""
        _, _, sample, c_noise, level = self._unet_inputs(x, sigma, cond)
        return self.unet.skip_features(sample, c_noise, cond.tokens(self.n_anchor_tokens), level)

    def _unet_inputs(self, x, sigma, cond: FrameConditions):
        """(x relative to the reference, sigma (B,), the UNet's 12-channel input, c_noise, CF noise level)."""
        sched = self.scheduler
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1)
        sigma = sigma.expand(x.shape[0]) if sigma.numel() == 1 else sigma
        ref = self.reference(cond)
        if ref is not None:
            x = x - ref
        sample = torch.cat([sched.precondition_inputs(x, sigma.view(-1, 1, 1, 1)), cond.cond_latent, cond.map_latent],
                           dim=1)
        level = cond.cond_noise_level
        if level is None and self.unet.unet.class_embedding is not None:
            level = sigma.new_zeros(sigma.shape)
        return x, sigma, sample, sched.precondition_noise(sigma), level

    def loss(self, x0: torch.Tensor, cond: FrameConditions, sigma: torch.Tensor | None = None,
             buffer: StreamingBuffer | None = None, generator: torch.Generator | None = None,
             augment: bool = True) -> dict[str, torch.Tensor]:
        """Training loss for target latents x0 (B, 4, h, w).

        sigma: (B,) noise levels; None draws log-normal ones. Stage 2 passes one fixed sigma per scene
        and the scene's StreamingBuffer. augment: CF noise and condition dropout (training).
        Returns {"loss", "l2", "hf"} (see diffusion.edm_loss).
        """
        d = self.diffusion_cfg
        if sigma is None:
            sigma = sample_sigmas(x0.shape[0], d["p_mean"], d["p_std"], generator, x0.device)
        sigma = torch.as_tensor(sigma, dtype=x0.dtype, device=x0.device).reshape(-1).expand(x0.shape[0])
        if augment:
            cond = augment_conditions(cond, self.model_cfg["condition_dropout"],
                                      self.model_cfg["cond_frame_noise"], generator)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        denoised = self.denoise(x0 + sigma.view(-1, 1, 1, 1) * noise, sigma, cond, buffer)
        return edm_loss(denoised, x0, sigma, d["sigma_data"], d["hf_loss_weight"], d["hf_cutoff"])
