"""Streaming rollouts: a trained model turned into long videos (600 frames and beyond), many streams in one
batch, constant memory.

    stage rollout --checkpoint RUN --autoencoder AE --cache LATENTS/long --data EXTRACTED/long \\
                  --dataroot WORLD --variant full --scenes S1 S2 ... [--seeds 0 1 2] --out ROLLOUTS/full \\
                  [--frames N] [--teacher-forced] [--resume]

A stream is (scene, seed); every stream of the job is generated in one batch (the UNet, HTFT and the
per-step StreamingBuffers run with a batch dimension of streams), each with its own layouts, anchor
token, noise generator and folder. `--teacher-forced` conditions frame t on the real frame t-1 from the
cache (the one-step quality run, `rollout.teacher_forced_frames` frames) instead of the generated one.

Each stream is written to its folder <out>/<scene>/seed-<seed>/ (decoded frames, its metadata and identity,
latents, an mp4 preview, a frame strip, timings), the format `stage evaluate` reads, stated in
stage/formats/rollout_folder.py.

Modules: streaming.py (`rollout`: the method's steps), streams.py (a stream: folders, inputs, identity),
batch.py (the batch runner: conditions, lanes, decoding, state checkpoints), resume.py (where a resume
continues), layouts.py (GT layouts from the cache, then the forecaster), forecaster.py (the pluggable
forecasters + registry), state.py (per-stream state checkpoints), loading.py (checkpoint -> model +
condition encoders, config checks).
"""

from stage.rollout.forecaster import (FORECASTERS, ForecastContext, Layout, LayoutForecaster, build_forecaster,
                                      register_forecaster)
from stage.rollout.streaming import Generator, Job, rollout

__all__ = ["FORECASTERS", "ForecastContext", "Generator", "Job", "Layout", "LayoutForecaster", "build_forecaster",
           "register_forecaster", "rollout"]
