"""Everything a rollout needs, made small and fast, for tests and the benchmark (random weights).

    paths = make_rollout_inputs(work_dir, dataroot, config)   # extract + AE + cache + checkpoint
    # -> {"data", "cache", "autoencoder", "checkpoint", "dataroot", "scene"}

`dataroot` is a nuScenes-format world with a long split (the embedded synthetic world, e.g. the test
fixture's or results/world); the config says the extraction size and the model.
"""

from __future__ import annotations

from pathlib import Path

import torch

from stage import config as config_mod


def tiny_config(height: int = 32, width: int = 64, overrides: dict | None = None) -> dict:
    """A validated config with a tiny UNet / AE / condition encoders, extraction at height x width."""
    cfg = config_mod.default()
    cfg["extract"].update(height=height, width=width)
    cfg["model"]["unet"].update(block_out_channels=[16, 32], down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
                                up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"], attention_head_dim=2,
                                cross_attention_dim=16, norm_num_groups=8)
    cfg["model"]["n_box_tokens"] = 8
    cfg["conditions"].update(cross_attention_dim=16, max_boxes=8, hidden=16)
    cfg["autoencoder"].update(block_out_channels=[8, 8, 8, 8], norm_num_groups=4)
    cfg["diffusion"]["num_steps"] = 3
    cfg["rollout"].update(checkpoint_every=10)
    return config_mod.validate(config_mod.deep_merge(cfg, overrides or {}))


def random_weights(config: dict, htft_scale: float = 0.1, seed: int = 0):
    """(model, condition encoder) with random weights; HTFT's zero-initialised output projections are made
    non-zero so the StreamingBuffers change the frames."""
    from stage.latents.conditions import build_condition_encoder
    from stage.model import build_model

    torch.manual_seed(seed)
    model = build_model(config)
    if model.htft_enabled and htft_scale:
        for f in model.unet.htft.fusions:
            torch.nn.init.normal_(f.proj_out.weight, std=htft_scale)
    conditions = build_condition_encoder(config["conditions"], config["autoencoder"]["latent_channels"])
    return model.eval(), conditions.eval()


def make_rollout_inputs(root: str | Path, dataroot: str | Path, config: dict, version: str = "v1.0-stage-synth",
                        split: str = "long", data_dir: str | Path | None = None, max_scenes: int = 1,
                        seed: int = 0) -> dict:
    """Extract the split (unless `data_dir` already holds it), train nothing: a random AE, its latent cache and
    a random-weights checkpoint in the `stage train --out` format."""
    from stage.data.extract import extract
    from stage.data.scene_format import open_split
    from stage.latents.autoencoder import build_embedded, load_codec, save_embedded
    from stage.latents.cache import encode_split
    from stage.train.checkpointing import export_weights

    root = Path(root)
    if data_dir is None:
        data_dir = root / "extracted" / split
        extract(dataroot, version, split, data_dir, {**config["extract"], "max_scenes": max_scenes})
    torch.manual_seed(seed)
    ae_dir = root / "autoencoder"
    save_embedded(build_embedded(config["autoencoder"]), 1.0, ae_dir)
    codec = load_codec(config["autoencoder"], ae_dir)
    cache_dir = root / "cache"
    encode_split(data_dir, cache_dir, codec, config["conditions"], config["cache"], progress=False)
    model, conditions = random_weights(config, seed=seed)
    ckpt = root / "checkpoint"
    export_weights(ckpt, model, conditions, config, {"train_stage": 0, "train_variant": "random"})
    return {"data": Path(data_dir), "cache": cache_dir, "autoencoder": ae_dir, "checkpoint": ckpt,
            "dataroot": Path(dataroot), "scene": open_split(data_dir)[0].name}
