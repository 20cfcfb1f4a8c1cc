"""The condition encoders behind one interface, chosen by the `conditions` config section.

    encoder = build_condition_encoder(config["conditions"], latent_channels=4)
    box_tokens, anchor_tokens = encoder(batch)      # (B, 70, D), (B, 1, D)

`batch` is what the cache datasets yield (stage.latents.datasets). The learned encoders read
`box_features` + `box_mask` and `anchor_latent` and train with the UNet; the CLIP encoders are frozen
and `stage encode` has already stored their outputs as `box_tokens` / `anchor_token`, which are used as
they are. D is conditions.cross_attention_dim and must equal the UNet's cross-attention dim
(`check_cross_attention_dim`).
"""

from __future__ import annotations

import torch
from torch import nn

from stage.errors import StageError
from stage.latents.anchor_tokens import ClipAnchorEncoder, LearnedAnchorEncoder
from stage.latents.box_tokens import ClipBoxEncoder, LearnedBoxEncoder


def check_cross_attention_dim(conditions_cfg: dict, unet_cross_attention_dim: int) -> None:
    """Raise StageError unless the condition tokens fit the UNet's cross-attention."""
    d = conditions_cfg["cross_attention_dim"]
    if int(d) != int(unet_cross_attention_dim):
        raise StageError(f"conditions.cross_attention_dim is {d} but the UNet's cross-attention dim is "
                         f"{unet_cross_attention_dim}; set both to the same value (768 for the paper's CLIP ViT-L/14).")


def check_condition_config(config: dict) -> None:
    """Where one config holds both sections: token width and count must match the model's."""
    cond, model = config["conditions"], config.get("model")
    if not model:
        return
    if model.get("pretrained_unet") is None and "unet" in model:
        check_cross_attention_dim(cond, model["unet"]["cross_attention_dim"])
    if "n_box_tokens" in model and model["n_box_tokens"] != cond["max_boxes"]:
        raise StageError(f"conditions.max_boxes is {cond['max_boxes']} but model.n_box_tokens is "
                         f"{model['n_box_tokens']}; set both to the same number (70 in the paper).")


class ConditionEncoder(nn.Module):
    """Box tokens and the anchor token from a cache batch; trainable only on the learned path."""

    def __init__(self, cfg: dict, latent_channels: int = 4, device: str | torch.device = "cpu"):
        super().__init__()
        self.cfg = cfg
        self.dim = int(cfg["cross_attention_dim"])
        self.device_ = device
        if cfg["box_encoder"] == "learned":
            self.box = LearnedBoxEncoder(dim=self.dim, fourier_frequencies=cfg["fourier_frequencies"],
                                         hidden=cfg["hidden"])
        else:
            self.box = None  # loaded on first use without cached tokens (frozen, kept out of state_dict)
        if cfg["anchor_encoder"] == "learned":
            self.anchor = LearnedAnchorEncoder(latent_channels=latent_channels, dim=self.dim, hidden=cfg["hidden"])
        else:
            self.anchor = None
        self._clip: dict[str, nn.Module] = {}

    def clip_box(self) -> ClipBoxEncoder:
        if "box" not in self._clip:
            enc = ClipBoxEncoder(self.cfg["clip_text_path"], self.cfg["clip_box_template"], self.device_)
            self._check_dim(enc.dim, "clip_text_path")
            self._clip["box"] = enc
        return self._clip["box"]

    def clip_anchor(self) -> ClipAnchorEncoder:
        if "anchor" not in self._clip:
            enc = ClipAnchorEncoder(self.cfg["clip_vision_path"], self.device_)
            self._check_dim(enc.dim, "clip_vision_path")
            self._clip["anchor"] = enc
        return self._clip["anchor"]

    def _check_dim(self, dim: int, key: str) -> None:
        if dim != self.dim:
            raise StageError(f"the CLIP model at conditions.{key} ({self.cfg[key]}) gives {dim}-d tokens but "
                             f"conditions.cross_attention_dim is {self.dim}; set it to {dim} (and the UNet's too).")

    def encode_boxes(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, N, F), (B, N) -> (B, N, D)."""
        return self.box(features, mask) if self.box is not None else self.clip_box()(features, mask)

    def encode_anchor(self, anchor_latent: torch.Tensor | None = None, anchor_image=None) -> torch.Tensor:
        """Learned: anchor latent (B, C, h, w); CLIP: anchor image (uint8 BHWC or [-1, 1] BCHW) -> (B, 1, D)."""
        if self.anchor is not None:
            return self.anchor(anchor_latent)
        if anchor_image is None:
            raise StageError("the CLIP anchor encoder needs the anchor image (or a cache made with "
                             "conditions.anchor_encoder: clip, which stores anchor_token)")
        return self.clip_anchor()(anchor_image)

    def forward(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        if self.box is None and "box_tokens" in batch:
            boxes = batch["box_tokens"].float()
        else:
            boxes = self.encode_boxes(batch["box_features"], batch["box_mask"])
        if self.anchor is None and "anchor_token" in batch:
            anchor = batch["anchor_token"].float()
        else:
            anchor = self.encode_anchor(batch.get("anchor_latent"), batch.get("anchor_image"))
        return boxes, anchor


def build_condition_encoder(cfg: dict, latent_channels: int = 4,
                            device: str | torch.device = "cpu") -> ConditionEncoder:
    return ConditionEncoder(cfg, latent_channels, device).to(device)
