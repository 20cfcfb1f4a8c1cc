"""The diffusion target (frame or residual to the condition frame) and the one sampler shared by stage 3
and the rollouts."""

import pytest
import torch

from stage import config
from stage.errors import StageError
from stage.model import FrameConditions, build_model, sample_frame

from stage.testing.config import tiny_config
from tests.test_model_sampler import conditions


def model_with(target: str):
    cfg = tiny_config(overrides={"diffusion": {"target": target}})
    torch.manual_seed(0)
    return build_model(cfg).eval()


def test_residual_target_is_the_frame_target_shifted_by_the_condition_frame():
    frame, residual = model_with("frame"), model_with("residual")
    residual.load_state_dict(frame.state_dict())
    cond = conditions(batch=2)
    x, sigma = torch.randn(2, 4, 8, 12), torch.tensor([0.3, 5.0])
    cf = cond.cond_latent
    with torch.no_grad():
        want = cf + frame.denoise(x - cf, sigma, cond)
        got = residual.denoise(x, sigma, cond)
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(got, frame.denoise(x, sigma, cond), atol=1e-2)


def test_residual_target_with_a_dropped_condition_frame_is_the_frame_target():
    frame, residual = model_with("frame"), model_with("residual")
    residual.load_state_dict(frame.state_dict())
    c = conditions(batch=2)
    dropped = FrameConditions(torch.zeros_like(c.cond_latent), c.map_latent, c.box_tokens, c.anchor_tokens)
    x, sigma = torch.randn(2, 4, 8, 12), torch.tensor([0.3, 5.0])
    with torch.no_grad():
        assert torch.equal(residual.denoise(x, sigma, dropped), frame.denoise(x, sigma, dropped))


def test_residual_sampling_is_frame_sampling_around_the_condition_frame():
    frame, residual = model_with("frame"), model_with("residual")
    residual.load_state_dict(frame.state_dict())
    cond = conditions()
    got = sample_frame(residual, cond, None, generator=torch.Generator().manual_seed(0))
    want = cond.cond_latent + sample_frame(frame, cond, None, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(got, want, atol=1e-4)  # Euler steps commute with the shift: only rounding differs


def test_stage3_and_rollouts_share_the_sampler_unless_told_otherwise():
    for key in (("train", "stage3", "sampling_steps"), ("rollout", "num_steps")):
        cfg = config.default()
        section = cfg
        for k in key[:-1]:
            section = section[k]
        section[key[-1]] = cfg["diffusion"]["num_steps"] + 1
        with pytest.raises(StageError, match=".".join(key) + ".*allow_sampler_mismatch"):
            config.validate(cfg)
        cfg["diffusion"]["allow_sampler_mismatch"] = True
        config.validate(cfg)  # said explicitly: accepted
        section[key[-1]] = None
        cfg["diffusion"]["allow_sampler_mismatch"] = False
        config.validate(cfg)


def test_a_rollout_refuses_steps_its_checkpoint_did_not_train_with():
    cfg = config.default()
    cfg["rollout"]["num_steps"] = cfg["diffusion"]["num_steps"]
    with pytest.raises(StageError, match="rollout.num_steps"):
        config.check_one_sampler(cfg, cfg["diffusion"]["num_steps"] + 2, "rollout")


def level_model(inference_level=0.05):
    cfg = tiny_config(overrides={"model": {"cond_frame_noise": {"mode": "level", "inference_level": inference_level}}})
    torch.manual_seed(0)
    return build_model(cfg).eval()


def test_the_condition_noise_level_reaches_the_model_and_changes_its_output():
    from dataclasses import replace

    model = level_model()
    emb = model.unet.unet.class_embedding
    assert float(emb.linear_2.weight.detach().abs().max()) == 0.0  # starts neutral: a pretrained UNet is unchanged
    x, sigma, cond = torch.randn(2, 4, 8, 12), torch.tensor([0.3, 5.0]), conditions(batch=2)
    with torch.no_grad():
        neutral = model.denoise(x, sigma, replace(cond, cond_noise_level=torch.tensor([0.0, 0.5])))
        assert torch.equal(neutral, model.denoise(x, sigma, cond))
        torch.nn.init.normal_(emb.linear_2.weight, std=0.5)
        at = {lv: model.denoise(x, sigma, replace(cond, cond_noise_level=torch.full((2,), lv))) for lv in (0.0, 0.5)}
    assert not torch.allclose(at[0.0], at[0.5], atol=1e-3)
    assert "unet.unet.class_embedding.linear_1.weight" in param_names(model, stage=1)
    assert "unet.unet.class_embedding.linear_1.weight" not in param_names(model, stage=2)


def param_names(model, stage):
    from stage.model import trainable_names

    return set(trainable_names(model, stage))


def test_training_draws_a_level_per_sample_and_inference_uses_the_fixed_one():
    from stage.model import augment_conditions

    spec = {"mode": "level", "std": 0.2, "max_level": 0.5, "inference_level": 0.05}
    cond = conditions(batch=64)
    out = augment_conditions(cond, 0.0, spec, torch.Generator().manual_seed(0))
    lv = out.cond_noise_level
    assert lv.shape == (64,) and 0 <= float(lv.min()) and float(lv.max()) <= 0.5 and float(lv.std()) > 0.05
    per_sample = (out.cond_latent - cond.cond_latent).flatten(1).std(1)
    assert torch.allclose(per_sample, lv, atol=0.05)  # each sample's noise has its own level
    fixed = augment_conditions(cond, 0.0, {**spec, "mode": "fixed"}, torch.Generator().manual_seed(0))
    assert fixed.cond_noise_level is None

    model = level_model()
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    one = conditions()
    a, b = (sample_frame(model, one, None, generator=gen()) for _ in range(2))
    assert torch.equal(a, b)  # the condition frame's inference noise comes from the stream's generator
    quiet = sample_frame(level_model(inference_level=0.0), one, None, generator=gen())
    assert not torch.equal(a, quiet)


def test_a_level_mode_checkpoint_reads_back_with_its_level_embedding(tmp_path):
    from stage.model import load_checkpoint, save_checkpoint

    model = level_model()
    torch.nn.init.normal_(model.unet.unet.class_embedding.linear_2.weight, std=0.5)
    save_checkpoint(model, tmp_path / "model.safetensors")
    back = load_checkpoint(tmp_path / "model.safetensors")
    assert back.unet.unet.class_embedding is not None
    assert torch.equal(back.unet.unet.class_embedding.linear_2.weight, model.unet.unet.class_embedding.linear_2.weight)
