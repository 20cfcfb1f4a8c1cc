"""Paper-sized construction, pretrained 4-channel UNet loading with zero-padded inputs, checkpoints."""

from pathlib import Path

import pytest
import torch
from diffusers import UNet2DConditionModel

from stage import config
from stage.errors import StageError
from stage.model import build_model, load_checkpoint, save_checkpoint
from stage.model.anchor_attention import AnchorCrossAttnProcessor
from stage.testing.config import tiny_config

REPO = Path(__file__).resolve().parents[1]



def anchor_processors(model):
    return [m for m in model.modules() if isinstance(m, AnchorCrossAttnProcessor)]


def test_paper_configuration_instantiates_with_sd1_shapes():
    cfg = config.load([REPO / "config" / "paper.yaml"])
    with torch.device("meta"):
        model = build_model(cfg)
    unet = model.unet.unet
    assert unet.conv_in.weight.shape == (320, 12, 3, 3)
    assert unet.conv_out.weight.shape == (4, 320, 3, 3)
    assert unet.down_blocks[0].attentions[0].transformer_blocks[0].attn2.to_k.weight.shape == (320, 768)
    assert model.unet.skip_channels == [320] * 4 + [640] * 3 + [1280] * 5  # the 12 SD-1.x skips
    assert len(model.unet.htft.fusions) == 12
    assert len(anchor_processors(model)) == 16  # one per transformer block: 6 down + 1 mid + 9 up
    assert model.diffusion_cfg["num_steps"] == 15 and model.diffusion_cfg["sigma_max"] == 700.0
    n_params = sum(p.numel() for p in unet.parameters())
    assert 850e6 < n_params < 1000e6  # SD-1.x UNet (~860M) + anchor attention


def tiny_pretrained(path: Path) -> UNet2DConditionModel:
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16, attention_head_dim=2)
    unet.save_pretrained(path / "unet", safe_serialization=True)
    return unet.eval()


def test_pretrained_unet_is_zero_padded_to_12_channels(tmp_path):
    pretrained = tiny_pretrained(tmp_path)
    cfg = config.default()
    cfg["model"]["pretrained_unet"] = str(tmp_path)  # a pipeline folder holding unet/
    model = build_model(config.validate(cfg)).eval()
    conv_in = model.unet.unet.conv_in
    assert conv_in.weight.shape == (8, 12, 3, 3)
    torch.testing.assert_close(conv_in.weight[:, :4], pretrained.conv_in.weight, rtol=0, atol=0)
    assert (conv_in.weight[:, 4:] == 0).all()
    torch.testing.assert_close(conv_in.bias, pretrained.conv_in.bias, rtol=0, atol=0)
    ours = model.unet.unet.state_dict()
    for name, value in pretrained.state_dict().items():
        if name != "conv_in.weight":
            torch.testing.assert_close(ours[name], value, rtol=0, atol=0)
    # zero padding + zero-initialised anchor attention: the 12-channel model is the pretrained model
    g = torch.Generator().manual_seed(0)
    noisy, cond = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 8, 8, 8, generator=g)
    boxes, t = torch.randn(1, 5, 16, generator=g), torch.tensor([0.5])
    with torch.no_grad():
        expected = pretrained(noisy, t, encoder_hidden_states=boxes).sample
        got = model.unet(torch.cat([noisy, cond], 1), t, torch.cat([boxes, torch.randn(1, 1, 16)], 1))
    torch.testing.assert_close(got, expected)


def test_checkpoint_roundtrip_is_safetensors_and_exact(tmp_path):
    model = build_model(tiny_config())
    for p in model.unet.htft.parameters():  # make the zero-initialised parts non-trivial
        torch.nn.init.normal_(p, std=0.1)
    path = tmp_path / "model.safetensors"
    save_checkpoint(model, path)
    assert path.read_bytes()[8:9] == b"{"  # safetensors: 8-byte header length, then a JSON header
    loaded = load_checkpoint(path)
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert loaded.model_cfg == model.model_cfg and loaded.diffusion_cfg == model.diffusion_cfg


def test_offsets_beyond_the_buffer_are_refused():
    cfg = config.default()
    cfg["model"]["htft"].update(buffer_size=5, offsets=[-1, -10])
    with pytest.raises(StageError, match="buffer_size"):
        build_model(config.validate(cfg))
