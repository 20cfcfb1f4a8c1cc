"""The anchor frame (first frame of the video) -> one token, (B, 1, D).

- `LearnedAnchorEncoder` (embedded default): a small conv net over the anchor's latent (B, 4, h, w);
  trained with the UNet.
- `ClipAnchorEncoder` (paper): the frozen CLIP image encoder's projected embedding of the anchor frame
  (CLIPVisionModelWithProjection), computed once per scene by `stage encode`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from stage.errors import StageError
from stage.latents.autoencoder import to_model_input
from stage.latents.box_tokens import _need_dir

# CLIP's published preprocessing statistics (the same numbers CLIPImageProcessor uses)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class LearnedAnchorEncoder(ModelMixin, ConfigMixin):
    """Anchor latent (B, C, h, w) -> (B, 1, dim). Pools to a coarse grid so the token keeps layout."""

    @register_to_config
    def __init__(self, latent_channels: int = 4, dim: int = 64, hidden: int = 64, grid: tuple[int, int] = (2, 4)):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(latent_channels, hidden, 3, padding=1), nn.SiLU(),
            nn.Conv2d(hidden, hidden, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(hidden, hidden, 3, stride=2, padding=1), nn.SiLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(tuple(grid))
        self.proj = nn.Linear(hidden * grid[0] * grid[1], dim)

    def forward(self, anchor_latent: torch.Tensor) -> torch.Tensor:
        h = self.pool(self.net(anchor_latent.float()))
        return self.proj(h.flatten(1))[:, None, :]


class ClipAnchorEncoder(nn.Module):
    """Frozen CLIP image encoder; anchor image (uint8 (B, H, W, 3) or float (B, 3, H, W) in [-1, 1]) -> (B, 1, D)."""

    def __init__(self, path: str, device: str | torch.device = "cpu"):
        super().__init__()
        from transformers import CLIPVisionModelWithProjection

        p = _need_dir(path, "clip_vision_path")
        try:
            self.model = CLIPVisionModelWithProjection.from_pretrained(p, local_files_only=True, use_safetensors=True)
        except (OSError, ValueError) as exc:
            raise StageError(f"cannot load a CLIPVisionModelWithProjection from {p}: {exc}") from exc
        self.model = self.model.to(device).eval().requires_grad_(False)
        self.size = int(self.model.config.image_size)
        self.dim = int(self.model.config.projection_dim)
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)

    def preprocess(self, images) -> torch.Tensor:
        """Shortest side to the model's size, centre crop, CLIP normalisation (as CLIPImageProcessor)."""
        x = (to_model_input(images).float() + 1) / 2
        h, w = x.shape[-2:]
        s = self.size / min(h, w)
        x = F.interpolate(x, size=(max(self.size, round(h * s)), max(self.size, round(w * s))), mode="bicubic",
                          align_corners=False, antialias=True).clamp(0, 1)
        top, left = (x.shape[-2] - self.size) // 2, (x.shape[-1] - self.size) // 2
        x = x[..., top:top + self.size, left:left + self.size]
        return (x - self.mean) / self.std

    @torch.no_grad()
    def forward(self, images) -> torch.Tensor:
        x = self.preprocess(images).to(self.model.device, self.model.dtype)
        return self.model(pixel_values=x).image_embeds.float()[:, None, :]
