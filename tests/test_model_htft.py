"""HTFT: a fresh fusion is the identity; with HTFT off the model is the plain diffusers UNet."""

import pytest
import torch

from stage.model import HTFTFusion, StreamingBuffer, build_model
from stage.testing.config import tiny_config


def htft_config(htft: bool = True):
    """The tiny config, HTFT on or off, with the anchor branch live (not zero-initialised) in these comparisons."""
    return tiny_config(overrides={"model": {"htft": {"enabled": htft}, "anchor_attention_zero_init": False}})


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn(2, 12, 8, 12, generator=g)
    tokens = torch.randn(2, 6, 16, generator=g)  # 5 box tokens + 1 anchor token
    return sample, torch.tensor([0.3, -0.7]), tokens


def filled_buffer(model, n=12):
    """A buffer full of random (non-zero) past features shaped like the model's skips."""
    buf = StreamingBuffer(10)
    sample, t, tokens = inputs(1)
    with torch.no_grad():
        for i in range(n):
            model.unet(torch.randn_like(sample), t, tokens, buf)
    return buf


def test_fresh_htft_leaves_unet_output_unchanged():
    torch.manual_seed(0)
    model = build_model(htft_config()).eval()
    buf = filled_buffer(model)
    sample, t, tokens = inputs()
    with torch.no_grad():
        plain = model.unet(sample, t, tokens, None)
        fused = model.unet(sample, t, tokens, buf)
        torch.testing.assert_close(fused, plain, rtol=0, atol=0)
        for fusion in model.unet.htft.fusions:  # a trained HTFT (non-zero output projection) must change it
            torch.nn.init.normal_(fusion.proj_out.weight, std=0.1)
        assert (model.unet(sample, t, tokens, buf) - plain).abs().max() > 1e-3


def test_htft_off_equals_plain_diffusers_unet():
    torch.manual_seed(0)
    on = build_model(htft_config(htft=True)).eval()
    off = build_model(htft_config(htft=False)).eval()
    assert off.unet.htft is None
    missing, unexpected = off.load_state_dict(on.state_dict(), strict=False)
    assert not missing and all(k.startswith("unet.htft.") for k in unexpected)
    sample, t, tokens = inputs()
    with torch.no_grad():
        ours = off.unet(sample, t, tokens, StreamingBuffer(10))  # buffer ignored when HTFT is off
        diffusers_forward = off.unet.unet(sample, t, encoder_hidden_states=tokens).sample
        torch.testing.assert_close(ours, diffusers_forward)
        torch.testing.assert_close(on.unet(sample, t, tokens, None), diffusers_forward)


@pytest.mark.parametrize("normalize_memory", [False, True])
def test_fusion_attends_per_pixel_over_k_frames(normalize_memory):
    torch.manual_seed(0)
    fusion = HTFTFusion(8, heads=2, norm_groups=4, normalize_memory=normalize_memory)
    f, memory = torch.randn(2, 8, 3, 5), torch.randn(2, 3, 8, 3, 5)
    torch.testing.assert_close(fusion(f, memory), f, rtol=0, atol=0)  # fresh: identity
    fusion.norm = torch.nn.Identity()  # GroupNorm mixes pixels through its statistics; test the attention alone
    torch.nn.init.normal_(fusion.proj_out.weight)
    out = fusion(f, memory)
    assert out.shape == f.shape
    changed = memory.clone()
    changed[:, :, :, 1, 2] += 5.0  # change the past features at one pixel only
    diff = (fusion(f, changed) - out).abs().sum(dim=(0, 1))
    assert diff[1, 2] > 0 and diff.sum() == diff[1, 2]
