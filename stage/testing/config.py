"""The one tiny config of the tests: a small model that trains and rolls out in seconds on a CPU.

TINY is an overlay on the schema defaults (what a test writes to a config file); tiny_config() is it
validated, with a test's own overrides merged on top. The model-shaping sections (autoencoder
architecture, conditions, model, diffusion) are those of the workflow's tiny run, .test/config.yaml
(tests/test_tiny_config.py keeps the two equal); the step counts are shorter.
"""

from __future__ import annotations

from stage import config as config_mod

TINY = {
    "extract": {"height": 32, "width": 64},
    "autoencoder": {"block_out_channels": [8, 8, 8, 8], "norm_num_groups": 4,
                    "train": {"steps": 4, "batch_size": 2, "crop": [32, 32], "eval_frames": 4, "scale_frames": 4,
                              "log_every": 1, "max_seconds": None}},
    "conditions": {"cross_attention_dim": 16, "max_boxes": 8, "hidden": 16, "fourier_frequencies": 2},
    # a UNet of two levels (the second with cross-attention) on 16-d box tokens; HTFT over the last 4 frames
    "model": {"n_box_tokens": 8,
              "unet": {"block_out_channels": [16, 32], "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
                       "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"], "attention_head_dim": 2,
                       "cross_attention_dim": 16, "norm_num_groups": 8},
              "htft": {"buffer_size": 4, "offsets": [-1, -2, -4]}},
    "diffusion": {"num_steps": 2},
    "train": {"threads": 1,
              "stage1": {"steps": 6, "batch_size": 2, "warmup_steps": 2, "checkpoint_every": 2},
              "stage2": {"steps": 4, "batch_size": 1, "window": 4, "warmup_steps": 1, "checkpoint_every": 2},
              # stage 3 samples with diffusion.num_steps (its default), so a test may override num_steps alone
              "stage3": {"steps": 4, "batch_size": 1, "window": 4, "warmup_steps": 1, "checkpoint_every": 2,
                         "collect_samples": 8, "w_start": 2, "w_double_every": 2, "w_max": 4}},
    "rollout": {"checkpoint_every": 10},
}


def tiny_overlay(overrides: dict | None = None) -> dict:
    """TINY with `overrides` deep-merged on top, unvalidated (what a test writes to a config file)."""
    return config_mod.deep_merge(TINY, overrides or {})


def tiny_config(overrides: dict | None = None) -> dict:
    """The tiny config validated (schema defaults filled), with `overrides` deep-merged on top of TINY."""
    return config_mod.validate(tiny_overlay(overrides), source="tiny test config")
