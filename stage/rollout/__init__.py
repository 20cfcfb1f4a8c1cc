"""Streaming rollouts: a trained model turned into long videos (600 frames and beyond), constant memory.

    stage rollout --checkpoint RUN --autoencoder AE --cache LATENTS/long --data EXTRACTED/long \\
                  --dataroot WORLD --scene NAME --variant full --out ROLLOUTS/full/NAME [--frames N] [--resume]

One rollout folder (the format `stage evaluate` reads; stage/evaluate/inputs.py):

    frames.npy            uint8 (T, H, W, 3) decoded frames, lossless
    meta.json             {"variant", "scene", "n_frames", "layout_source": per-frame "gt" / forecaster name,
                           "layout_runs": [[source, start, end), ...], "gt_frames", "forecaster",
                           "checkpoint": {"path", "sha256"}, "config_hash", "seed", "num_steps", "htft", ...}
    latents.safetensors   "latents" (T, C, h, w): the generated latents
    video.mp4             H.264 preview (never scored)
    strip.png             frames T = 1, 40, 120, 240, 360, 480, 600 (1-based, those that exist), side by side
    timings.json          per-frame seconds, frames/s, peak memory (at every state checkpoint and at the end)

Modules: streaming.py (the loop), layouts.py (GT layouts from the cache, then the forecaster),
forecaster.py (the pluggable forecasters + registry), state.py (streaming-state checkpoints),
outputs.py (the files above), loading.py (checkpoint -> model + condition encoders, config checks).
"""

from stage.rollout.forecaster import (FORECASTERS, ForecastContext, Layout, LayoutForecaster, build_forecaster,
                                      register_forecaster)
from stage.rollout.streaming import rollout

__all__ = ["FORECASTERS", "ForecastContext", "Layout", "LayoutForecaster", "build_forecaster", "register_forecaster",
           "rollout"]
