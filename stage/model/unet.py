"""The 12-channel conditioned UNet with HTFT on its skip connections.

The backbone is a diffusers `UNet2DConditionModel` whose input is the channel concatenation of three
latents [paper]: noisy latent of frame T, condition-frame latent (T-1), HD-map latent (4 each).
Its `encoder_hidden_states` are the box tokens followed by the anchor token (see anchor_attention).

`StageUNet.forward` runs the backbone's blocks itself (the same path as UNet2DConditionModel.forward
for this configuration) so that HTFT can fuse each encoder skip feature with its past features
before the decoder reads it. With HTFT off, or without memory, it equals the backbone's forward.

Two constructions share this code:
- embedded default: `model.unet` in the config (small widths, random init);
- paper: SD-1.x dimensions (320/640/1280/1280, cross-attention dim 768; config/paper.yaml), or a
  pretrained SD UNet directory (`model.pretrained_unet`, diffusers format) whose 4-channel conv_in
  is zero-padded to 12 channels [dev].
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from diffusers import UNet2DConditionModel

from stage.model.anchor_attention import install_anchor_attention
from stage.model.htft import HTFT, skip_channels
from stage.model.streaming_buffer import StreamingBuffer

LATENT_CHANNELS = 4
N_LATENTS = 3  # noisy latent, condition-frame latent, HD-map latent
LEVEL_SCALE = 1000.0  # levels of about 0-1 onto the 0-1000 range the sinusoidal timestep projection spreads out


def pad_input_channels(unet: UNet2DConditionModel, in_channels: int) -> UNet2DConditionModel:
    """Widen conv_in to `in_channels`: pretrained weights stay in the first channels, the new ones are zeros."""
    old = unet.conv_in
    if old.in_channels == in_channels:
        return unet
    if old.in_channels > in_channels:
        raise ValueError(f"cannot shrink conv_in from {old.in_channels} to {in_channels} channels")
    new = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding,
                    device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, : old.in_channels] = old.weight
        new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=in_channels)
    return unet


def load_pretrained_unet(path: str | Path, in_channels: int = LATENT_CHANNELS * N_LATENTS,
                         level_embedding: bool = False) -> UNet2DConditionModel:
    """Load a diffusers-format UNet (a `unet/` directory, or a pipeline directory holding one), safetensors only;
    `level_embedding` adds the condition-noise level embedding (zero_level_embedding) to it."""
    path = Path(path)
    if not (path / "config.json").is_file() and (path / "unet" / "config.json").is_file():
        path = path / "unet"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not a diffusers UNet directory (no config.json)")
    extra = {"class_embed_type": "timestep", "low_cpu_mem_usage": False} if level_embedding else {}
    unet = pad_input_channels(UNet2DConditionModel.from_pretrained(path, local_files_only=True, use_safetensors=True,
                                                                   **extra), in_channels)
    return zero_level_embedding(unet) if level_embedding else unet


def zero_level_embedding(unet: UNet2DConditionModel) -> UNet2DConditionModel:
    """Start diffusers' timestep-type class embedding (here: the condition frame's noise level, added to the
    time embedding) with its output layer at zero: the UNet is unchanged until it learns to use the level,
    and a pretrained one keeps its behaviour."""
    nn.init.zeros_(unet.class_embedding.linear_2.weight)
    nn.init.zeros_(unet.class_embedding.linear_2.bias)
    return unet


def build_backbone(model_cfg: dict) -> UNet2DConditionModel:
    """The diffusers UNet from the `model` config section: pretrained directory if given, else `model.unet`;
    with the condition-noise level embedding where `model.cond_frame_noise.mode` is `level`."""
    level = model_cfg["cond_frame_noise"]["mode"] == "level"
    if model_cfg.get("pretrained_unet"):
        return load_pretrained_unet(model_cfg["pretrained_unet"], level_embedding=level)
    arch = model_cfg["unet"]
    unet = UNet2DConditionModel(
        in_channels=LATENT_CHANNELS * N_LATENTS,
        out_channels=LATENT_CHANNELS,
        block_out_channels=tuple(arch["block_out_channels"]),
        down_block_types=tuple(arch["down_block_types"]),
        up_block_types=tuple(arch["up_block_types"]),
        layers_per_block=arch["layers_per_block"],
        attention_head_dim=arch["attention_head_dim"],
        cross_attention_dim=arch["cross_attention_dim"],
        transformer_layers_per_block=arch["transformer_layers_per_block"],
        norm_num_groups=arch["norm_num_groups"],
        **({"class_embed_type": "timestep"} if level else {}),
    )
    return zero_level_embedding(unet) if level else unet


class StageUNet(nn.Module):
    """Conditioned UNet + anchor cross-attention + HTFT fusion on the skip connections.

    Args:
        unet: a 12-input-channel diffusers UNet2DConditionModel.
        htft_enabled: build the fusion modules (off = the ablation baseline).
        htft_offsets: the selector's offsets into the StreamingBuffer, e.g. (-1, -5, -10).
        htft_heads, htft_norm_groups, htft_normalize_memory: see htft.HTFTFusion.
        n_anchor_tokens, anchor_zero_init: see anchor_attention.
    """

    def __init__(self, unet: UNet2DConditionModel, htft_enabled: bool = True,
                 htft_offsets: Sequence[int] = (-1, -5, -10), htft_heads: int = 8, htft_norm_groups: int = 32,
                 htft_normalize_memory: bool = False, n_anchor_tokens: int = 1, anchor_zero_init: bool = True):
        super().__init__()
        self.unet = unet
        self.htft_offsets = tuple(htft_offsets)
        install_anchor_attention(unet, n_anchor_tokens=n_anchor_tokens, zero_init=anchor_zero_init)
        self.skip_channels = skip_channels(unet)
        self.htft = (HTFT(self.skip_channels, htft_heads, htft_norm_groups, htft_normalize_memory)
                     if htft_enabled else None)

    @property
    def htft_enabled(self) -> bool:
        return self.htft is not None

    def compile_passes(self, **options) -> None:
        """torch.compile the encoder, the fusion and the decoder, each on its own: the StreamingBuffer read and
        write between them stay in Python. `options` go to torch.compile; calling it again does nothing."""
        if getattr(self, "_compiled", False):
            return
        self.encode, self.decode = torch.compile(self.encode, **options), torch.compile(self.decode, **options)
        if self.htft is not None:  # the method, not the module: the weights keep their names
            self.htft.forward = torch.compile(self.htft.forward, **options)
        self._compiled = True

    def encode(self, sample: torch.Tensor, emb: torch.Tensor, encoder_hidden_states: torch.Tensor
               ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Encoder: (B, 12, h, w) -> (deepest feature, skip features [(B, C_i, H_i, W_i)])."""
        sample = self.unet.conv_in(sample)
        skips = [sample]
        for block in self.unet.down_blocks:
            if getattr(block, "has_cross_attention", False):
                sample, res = block(hidden_states=sample, temb=emb, encoder_hidden_states=encoder_hidden_states)
            else:
                sample, res = block(hidden_states=sample, temb=emb)
            skips += list(res)
        return sample, skips

    def decode(self, sample: torch.Tensor, emb: torch.Tensor, encoder_hidden_states: torch.Tensor,
               skips: Sequence[torch.Tensor]) -> torch.Tensor:
        """Middle block + decoder with the given skip inputs -> (B, 4, h, w)."""
        unet = self.unet
        if unet.mid_block is not None:
            if getattr(unet.mid_block, "has_cross_attention", False):
                sample = unet.mid_block(sample, emb, encoder_hidden_states=encoder_hidden_states)
            else:
                sample = unet.mid_block(sample, emb)
        skips = list(skips)
        # sizes not divisible by the total downsampling: upsample to the next skip's size (as diffusers does)
        odd = any(d % 2**unet.num_upsamplers != 0 for d in skips[0].shape[-2:])
        for i, block in enumerate(unet.up_blocks):
            res = tuple(skips[-len(block.resnets):])
            skips = skips[: -len(block.resnets)]
            upsample_size = skips[-1].shape[2:] if (odd and i < len(unet.up_blocks) - 1) else None
            if getattr(block, "has_cross_attention", False):
                sample = block(hidden_states=sample, temb=emb, res_hidden_states_tuple=res,
                               encoder_hidden_states=encoder_hidden_states, upsample_size=upsample_size)
            else:
                sample = block(hidden_states=sample, temb=emb, res_hidden_states_tuple=res,
                               upsample_size=upsample_size)
        if unet.conv_norm_out is not None:
            sample = unet.conv_act(unet.conv_norm_out(sample))
        return unet.conv_out(sample)

    def embedding(self, sample: torch.Tensor, timestep: torch.Tensor, level: torch.Tensor | None) -> torch.Tensor:
        """The time embedding (plus the condition-noise level's, where the UNet has one), as diffusers sums them."""
        unet = self.unet
        emb = unet.time_embedding(unet.get_time_embed(sample=sample, timestep=timestep))
        if unet.class_embedding is not None:
            emb = emb + unet.get_class_embed(sample=sample, class_labels=LEVEL_SCALE * level)
        return unet.time_embed_act(emb) if unet.time_embed_act is not None else emb

    def skip_features(self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                      level: torch.Tensor | None = None) -> list[torch.Tensor]:
        """The un-fused skip features forward() would push into the buffer (the encoder alone)."""
        return self.encode(sample, self.embedding(sample, timestep, level), encoder_hidden_states)[1]

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                buffer: StreamingBuffer | None = None, level: torch.Tensor | None = None) -> torch.Tensor:
        """One UNet pass, reading and writing this denoising step's StreamingBuffer.

        Args:
            sample: (B, 12, h, w) = [c_in * noisy latent, condition-frame latent, HD-map latent].
            timestep: (B,) or scalar noise conditioning (EDM c_noise).
            encoder_hidden_states: (B, n_box + n_anchor, D) box tokens then anchor token(s).
            buffer: this step's StreamingBuffer, or None (no temporal memory, e.g. training stage 1).
                With HTFT on, the selector's past features (zeros where missing) are fused into the
                skips, then the frame's un-fused skip features are pushed (detached). With HTFT off
                the buffer is ignored.
            level: (B,) the condition frame's noise level, for a UNet with the level embedding
                (model.cond_frame_noise.mode: level); ignored without one.
        Returns:
            model output (B, 4, h, w).
        """
        emb = self.embedding(sample, timestep, level)
        deepest, skips = self.encode(sample, emb, encoder_hidden_states)
        fused = skips
        if buffer is not None and self.htft is not None:
            fused = self.htft(skips, buffer.select(self.htft_offsets, like=skips))
            buffer.push(skips)
        return self.decode(deepest, emb, encoder_hidden_states, fused)
