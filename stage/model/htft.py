"""HTFT fusion: Hierarchical Temporal Feature Transfer into the UNet's skip connections [paper eqs 1-3].

For one skip feature f (B, C, H, W) of the current frame and the K selected past features
m (B, K, C, H, W) of the same skip at the same denoising step:

    g       = Linear_in(GroupNorm(f))                      # query, per pixel
    H       = CrossAttn(query = g, keys/values = m)        # per pixel, over the K past frames
    F_fused = f + Linear_out(H)                            # replaces f as the decoder's skip input

The keys/values are the selected past features themselves, projected by the attention's own
to_k / to_v (the literal reading of eq. 2); `normalize_memory` (config `model.htft.normalize_memory`)
instead passes them through the query's GroupNorm and Linear_in first [ours: the paper does not say].
Linear_out starts at zero, so a fresh fusion module is the identity. The attention is diffusers'
`Attention` on sequences of length 1 (query) and K (memory), one sequence per pixel.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
from diffusers.models.attention_processor import Attention


class HTFTFusion(nn.Module):
    """Fuse one skip connection with its K past features: (B, C, H, W), (B, K, C, H, W) -> (B, C, H, W)."""

    def __init__(self, channels: int, heads: int = 8, norm_groups: int = 32, normalize_memory: bool = False):
        super().__init__()
        heads = math.gcd(heads, channels)  # heads must divide the width (small embedded widths)
        self.normalize_memory = normalize_memory
        self.norm = nn.GroupNorm(math.gcd(norm_groups, channels), channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels)
        self.attn = Attention(channels, cross_attention_dim=channels, heads=heads, dim_head=channels // heads,
                              out_bias=True)
        self.proj_out = nn.Linear(channels, channels)
        nn.init.zeros_(self.proj_out.weight)  # a fresh HTFT is the identity
        nn.init.zeros_(self.proj_out.bias)

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        """g = Linear_in(GroupNorm(x)): (N, C, H, W) -> (N, H * W, C), one token per pixel."""
        x = self.norm(x)
        return self.proj_in(x.flatten(2).transpose(1, 2))

    def forward(self, f: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """f (B, C, H, W), memory (B, K, C, H, W) -> F_fused (B, C, H, W)."""
        b, c, h, w = f.shape
        k = memory.shape[1]
        if self.normalize_memory:  # one GroupNorm + Linear_in pass over the frame and its K past features
            tokens = self._tokens(torch.cat([f, memory.reshape(b * k, c, h, w)]))      # (B + B*K, H*W, C)
            query, mem = tokens[:b], tokens[b:].reshape(b, k, h * w, c).transpose(1, 2)
        else:
            query, mem = self._tokens(f), memory.flatten(3).permute(0, 3, 1, 2)        # mem (B, H*W, K, C)
        # contiguous: Linear on a strided 3-D view falls back to one small matmul per pixel on CPU (~4x slower)
        query = query.reshape(b * h * w, 1, c).contiguous()                            # one sequence per pixel
        mem = mem.reshape(b * h * w, k, c).contiguous()
        hidden = self.attn(query, encoder_hidden_states=mem)                           # (B*H*W, 1, C)
        delta = self.proj_out(hidden).reshape(b, h, w, c).permute(0, 3, 1, 2)
        return f + delta


class HTFT(nn.Module):
    """One HTFTFusion per skip connection of the UNet encoder."""

    def __init__(self, skip_channels: Sequence[int], heads: int = 8, norm_groups: int = 32,
                 normalize_memory: bool = False):
        super().__init__()
        self.fusions = nn.ModuleList(HTFTFusion(c, heads, norm_groups, normalize_memory) for c in skip_channels)

    def forward(self, skips: Sequence[torch.Tensor], memory: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """skips [(B, C_i, H_i, W_i)], memory [(B, K, C_i, H_i, W_i)] -> fused skips [(B, C_i, H_i, W_i)]."""
        if len(skips) != len(self.fusions) or len(memory) != len(self.fusions):
            raise ValueError(f"HTFT has {len(self.fusions)} fusion modules, got {len(skips)} skips "
                             f"and {len(memory)} memory entries")
        return [fuse(f, m) for fuse, f, m in zip(self.fusions, skips, memory)]


def skip_channels(unet) -> list[int]:
    """Channels of each skip feature of a diffusers UNet2DConditionModel, in encoder order.

    The skips are conv_in's output, then each down block's resnet outputs and its downsampler output.
    """
    channels = [unet.config.block_out_channels[0]]
    for block in unet.down_blocks:
        channels += [r.out_channels for r in block.resnets]
        if block.downsamplers is not None:
            channels += [d.out_channels for d in block.downsamplers]
    return channels
