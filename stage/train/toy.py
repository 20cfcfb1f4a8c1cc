"""A tiny latent cache and model config, for the training tests and quick smoke runs (not the pipeline).

The cache is made the pipeline's way: fabricated scenes (stage.latents.toy) encoded by an untrained
embedded autoencoder through `stage.latents.cache.encode_split`.
"""

from __future__ import annotations

from pathlib import Path

import torch

# A UNet with two levels (the second with cross-attention), 8-channel tokens, 8 box tokens.
TINY_CONFIG = {
    "autoencoder": {"block_out_channels": [8, 8, 8, 8], "norm_num_groups": 4},
    "conditions": {"cross_attention_dim": 16, "max_boxes": 8, "hidden": 16, "fourier_frequencies": 2},
    "model": {"n_box_tokens": 8, "unet": {"block_out_channels": [8, 16], "down_block_types": ["DownBlock2D",
              "CrossAttnDownBlock2D"], "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"], "layers_per_block": 1,
              "attention_head_dim": 2, "cross_attention_dim": 16, "norm_num_groups": 4},
              "htft": {"buffer_size": 4, "offsets": [-1, -2, -4], "norm_groups": 4}},
    "diffusion": {"num_steps": 2},
    "train": {"threads": 1,
              "stage1": {"steps": 6, "batch_size": 2, "warmup_steps": 2, "checkpoint_every": 2},
              "stage2": {"steps": 4, "batch_size": 1, "window": 4, "warmup_steps": 1, "checkpoint_every": 2},
              "stage3": {"steps": 4, "batch_size": 1, "window": 4, "warmup_steps": 1, "checkpoint_every": 2,
                         "sampling_steps": 2, "collect_samples": 8, "w_start": 2, "w_double_every": 2, "w_max": 4}},
}


def make_toy_cache(root: str | Path, n_scenes: int = 2, n_frames: int = 8, height: int = 32, width: int = 64,
                   config: dict | None = None) -> Path:
    """Write fabricated scenes and their latent cache under root; returns the cache directory."""
    from stage import config as config_mod
    from stage.latents.autoencoder import build_embedded, load_codec, save_embedded
    from stage.latents.cache import encode_split
    from stage.latents.toy import fabricate_split

    cfg = config_mod.validate(config if config is not None else TINY_CONFIG)
    root = Path(root)
    data = fabricate_split(root / "split", n_scenes=n_scenes, n_frames=n_frames, height=height, width=width)
    torch.manual_seed(0)
    save_embedded(build_embedded(cfg["autoencoder"]), 1.0, root / "ae")
    codec = load_codec(cfg["autoencoder"], root / "ae")
    encode_split(data, root / "cache", codec, cfg["conditions"], cfg["cache"], progress=False)
    return root / "cache"
