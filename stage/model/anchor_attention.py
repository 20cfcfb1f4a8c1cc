"""The anchor-frame cross-attention: an extra cross-attention on the anchor token in each transformer block.

The UNet receives one token sequence through diffusers' `encoder_hidden_states`: the box tokens
followed by the anchor token(s), (B, n_box + n_anchor, D). `AnchorCrossAttnProcessor` replaces the
processor of every transformer block's `attn2` (the cross-attention): it splits that sequence,
runs the block's own cross-attention on the box tokens and a second, separate cross-attention on
the anchor tokens, and returns the sum (the block adds its residual). This is the "decoupled
cross-attention" pattern of IP-Adapter; the paper says only "an extra cross-attention per
transformer block" [ours: decoupled and summed, sharing the block's norm2 input].

The anchor branch's output projection starts at zero [ours, `model.anchor_attention.zero_init`], so
a pretrained UNet is unchanged until it learns to use the anchor.
"""

from __future__ import annotations

import torch
from torch import nn
from diffusers.models.attention_processor import Attention, AttnProcessor2_0


class AnchorCrossAttnProcessor(nn.Module):
    """Processor for a transformer block's `attn2`: box cross-attention + anchor cross-attention.

    Args:
        query_dim: channels of the block's hidden states.
        cross_attention_dim: token width D.
        heads, dim_head: the anchor attention's heads (same as the block's by default).
        n_anchor_tokens: how many trailing tokens of `encoder_hidden_states` are anchor tokens.
        zero_init: start the anchor branch's output projection at zero.
    """

    def __init__(self, query_dim: int, cross_attention_dim: int, heads: int, dim_head: int,
                 n_anchor_tokens: int = 1, zero_init: bool = True):
        super().__init__()
        self.n_anchor_tokens = n_anchor_tokens
        self.box_processor = AttnProcessor2_0()
        self.anchor_attn = Attention(query_dim, cross_attention_dim=cross_attention_dim, heads=heads,
                                     dim_head=dim_head, out_bias=True)
        if zero_init:
            nn.init.zeros_(self.anchor_attn.to_out[0].weight)
            nn.init.zeros_(self.anchor_attn.to_out[0].bias)

    # diffusers inspects `processor.__call__` for its keyword arguments, so define __call__ (as IP-Adapter does).
    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        """hidden_states (B, L, C); encoder_hidden_states (B, n_box + n_anchor, D) -> (B, L, C)."""
        if encoder_hidden_states is None:
            raise ValueError("AnchorCrossAttnProcessor needs encoder_hidden_states = [box tokens, anchor tokens]")
        n = self.n_anchor_tokens
        box_tokens, anchor_tokens = encoder_hidden_states[:, :-n], encoder_hidden_states[:, -n:]
        out = self.box_processor(attn, hidden_states, box_tokens, attention_mask, temb)
        return out + self.anchor_attn(hidden_states, encoder_hidden_states=anchor_tokens)


def install_anchor_attention(unet: nn.Module, n_anchor_tokens: int = 1, zero_init: bool = True) -> int:
    """Give every cross-attention (`attn2`) of a diffusers UNet an AnchorCrossAttnProcessor.

    Returns the number of processors installed.
    """
    count = 0
    for name, module in unet.named_modules():
        if isinstance(module, Attention) and name.endswith("attn2") and module.is_cross_attention:
            heads = module.heads
            module.set_processor(AnchorCrossAttnProcessor(
                query_dim=module.to_q.in_features,
                cross_attention_dim=module.cross_attention_dim,
                heads=heads,
                dim_head=module.inner_dim // heads,
                n_anchor_tokens=n_anchor_tokens,
                zero_init=zero_init,
            ))
            count += 1
    return count
