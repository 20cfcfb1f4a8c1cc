"""Streaming rollouts: a trained model turned into long videos (600 frames and beyond), many streams in one
batch, constant memory.

    stage rollout --checkpoint RUN --autoencoder AE --cache LATENTS/long --data EXTRACTED/long \\
                  --dataroot WORLD --variant full --scenes S1 S2 ... [--seeds 0 1 2] --out ROLLOUTS/full \\
                  [--frames N] [--teacher-forced] [--resume]

A stream is (scene, seed); every stream of the job is generated in one batch (the UNet, HTFT and the
per-step StreamingBuffers run with a batch dimension of streams), each with its own layouts, anchor
token, noise generator and folder. `--teacher-forced` conditions frame t on the real frame t-1 from the
cache (the one-step quality run, `rollout.teacher_forced_frames` frames) instead of the generated one.

One stream folder, <out>/<scene>/seed-<seed>/ (the format `stage evaluate` reads; stage/evaluate/inputs.py):

    frames.npy            uint8 (T, H, W, 3) decoded frames, lossless
    meta.json             {"variant", "scene", "seed", "n_frames", "condition": "generated" | "real",
                           "batch": [stream ids "<scene>/seed-<seed>" generated together], "lanes",
                           "layout_source": per-frame "gt" / forecaster name, "layout_runs": [[source, start,
                           end), ...], "gt_frames", "forecaster", "checkpoint": {"path", "sha256"},
                           "config_hash", "num_steps", "htft", "settings" (the stream's identity), ...}
    latents.safetensors   "latents" (T, C, h, w): the generated latents
    video.mp4             H.264 preview (never scored)
    strip.png             frames T = 1, 40, 120, 240, 360, 480, 600 (1-based, those that exist), side by side
    timings.json          per-frame seconds of the batch, frames/s per stream and of all streams, batch size,
                          peak memory (at every state checkpoint and at the end)

Modules: streaming.py (`rollout`: the method's steps), streams.py (a stream: folders, inputs, identity),
batch.py (the batch runner: conditions, lanes, decoding, state checkpoints), resume.py (where a resume
continues), layouts.py (GT layouts from the cache, then the forecaster), forecaster.py (the pluggable
forecasters + registry), state.py (per-stream state checkpoints), outputs.py (the files above),
loading.py (checkpoint -> model + condition encoders, config checks).
"""

from stage.rollout.forecaster import (FORECASTERS, ForecastContext, Layout, LayoutForecaster, build_forecaster,
                                      register_forecaster)
from stage.rollout.streaming import rollout

__all__ = ["FORECASTERS", "ForecastContext", "Layout", "LayoutForecaster", "build_forecaster", "register_forecaster",
           "rollout"]
