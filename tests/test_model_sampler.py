"""One-frame sampler determinism, the loss on a tiny overfit, and the training-stage parameter groups."""

import torch

from stage.model import FrameConditions, build_model, new_buffers, param_groups, sample_frame, trainable_names
from stage.model.diffusion import edm_loss, high_pass
from stage.testing.config import tiny_config


def four_step_config():
    """The tiny config with a 4-step sampler: 4 StreamingBuffers, one per step, for the tests to count."""
    return tiny_config(overrides={"diffusion": {"num_steps": 4}})


def conditions(batch=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return FrameConditions(torch.randn(batch, 4, 8, 12, generator=g), torch.randn(batch, 4, 8, 12, generator=g),
                           torch.randn(batch, 5, 16, generator=g), torch.randn(batch, 1, 16, generator=g))


def rollout(model, seed, n_frames=3):
    buffers = new_buffers(model)
    gen = torch.Generator().manual_seed(seed)
    frames = [sample_frame(model, conditions(), buffers, generator=gen) for _ in range(n_frames)]
    return frames, buffers


def test_sampling_is_deterministic_for_a_seed():
    torch.manual_seed(0)
    model = build_model(four_step_config()).eval()
    for f in model.unet.htft.fusions:  # a non-trivial HTFT, so the buffers matter
        torch.nn.init.normal_(f.proj_out.weight, std=0.1)
    a, buffers = rollout(model, seed=1)
    b, _ = rollout(model, seed=1)
    c, _ = rollout(model, seed=2)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[-1], c[-1])
    assert torch.isfinite(a[-1]).all() and a[-1].shape == (1, 4, 8, 12)
    assert len(buffers) == 4 and all(len(buffers[t]) == 3 for t in range(4))


def test_each_stream_of_a_batch_draws_its_noise_from_its_own_generator():
    from stage.model.sampler import initial_noise

    ref = torch.zeros(3, 4, 8, 12)
    noise = initial_noise(ref, [torch.Generator().manual_seed(s) for s in (5, 6, 7)])
    alone = torch.randn(1, 4, 8, 12, generator=torch.Generator().manual_seed(6))
    assert torch.equal(noise[1:2], alone)  # row 1 is seed 6's noise whatever the batch around it
    torch.manual_seed(0)
    model = build_model(four_step_config()).eval()
    cond = conditions(batch=2)
    one = FrameConditions(cond.cond_latent[1:], cond.map_latent[1:], cond.box_tokens[1:], cond.anchor_tokens[1:])
    batched = sample_frame(model, cond, new_buffers(model), generator=[torch.Generator().manual_seed(s) for s in (3, 4)])
    single = sample_frame(model, one, new_buffers(model), generator=torch.Generator().manual_seed(4))
    assert float((batched[1:] - single).abs().max()) < 1e-4  # batched kernels: equal up to the last bits


def test_an_anchored_sample_takes_the_references_channel_means_and_keeps_the_rest():
    torch.manual_seed(0)
    model = build_model(four_step_config()).eval()
    plain_model = build_model(tiny_config(overrides={"diffusion": {"num_steps": 4, "anchor_channel_means": False}}))
    plain_model.load_state_dict(model.state_dict())
    cond, reference = conditions(batch=2), 3 + 2 * torch.randn(2, 4, 8, 12)

    def sample(m, ref):
        return sample_frame(m, cond, new_buffers(m), generator=[torch.Generator().manual_seed(s) for s in (1, 2)],
                            reference=ref)

    plain, anchored = sample(model, None), sample(model, reference)
    means = (-2, -1)
    assert float((plain.mean(means) - reference.mean(means)).abs().min()) > 0.5  # far apart without it
    assert torch.allclose(anchored.mean(means), reference.mean(means), atol=1e-5)
    assert torch.allclose(anchored - anchored.mean(means, keepdim=True), plain - plain.mean(means, keepdim=True),
                          atol=1e-5)
    assert torch.equal(sample(plain_model.eval(), reference), plain)  # switched off: the sampler as it was


def test_high_frequency_term_is_part_of_the_l2():
    err = torch.randn(2, 4, 8, 12)
    full = (high_pass(err, 0.0).abs() ** 2).sum()
    torch.testing.assert_close(full, (err**2).sum())  # orthonormal FFT: cutoff 0 keeps everything
    assert (high_pass(err, 0.5).abs() ** 2).sum() < full
    out = edm_loss(err, err, torch.tensor([1.0, 2.0]), 1.0)
    assert out["loss"] == 0


def test_loss_decreases_on_a_tiny_overfit():
    torch.manual_seed(0)
    model = build_model(four_step_config()).train()
    cond, x0 = conditions(batch=2), torch.randn(2, 4, 8, 12, generator=torch.Generator().manual_seed(9))
    opt = torch.optim.AdamW(param_groups(model, stage=1), lr=2e-3)
    losses = []
    for step in range(40):
        # one fixed batch: the same sigmas, noise, CF noise and dropout every step
        out = model.loss(x0, cond, generator=torch.Generator().manual_seed(3))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_param_groups_follow_the_training_stages():
    model = build_model(four_step_config())
    s1, s2 = set(trainable_names(model, 1)), set(trainable_names(model, 2))
    assert any(n.startswith("unet.unet.down_blocks.") for n in s1) and not any("htft" in n for n in s1)
    assert not any(n.startswith(("unet.unet.down_blocks.", "unet.unet.conv_in.", "unet.unet.time_embedding."))
                   for n in s2)
    assert any(n.startswith("unet.unet.mid_block.") for n in s2) and any(n.startswith("unet.htft.") for n in s2)
    assert any(n.startswith("unet.unet.up_blocks.") for n in s2)
    groups = param_groups(model, stage=2)
    in_groups = {id(p) for g in groups for p in g["params"]}
    for n, p in model.named_parameters():
        assert p.requires_grad == (n in s2) == (id(p) in in_groups)
    assert set(trainable_names(model, 3)) == s2  # stage3_trainable: decoder
