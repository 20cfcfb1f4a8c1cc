"""Rollouts at other precisions, in batches of streams, compiled, and their memory plan: on the CPU by default,
on `STAGE_TEST_DEVICE` (e.g. cuda, benchmarks/gpu_check.sh) where set."""

import os

import numpy as np
import pytest
import torch

from stage.formats.latent_cache import LatentCache
from stage.formats.rollout_folder import stream_dir
from stage.latents.autoencoder import load_codec
from stage.rollout import Generator, Job, rollout
from stage.rollout.loading import load_for_rollout
from stage.rollout.state import latest_state, load_state
from stage.rollout.streaming import work_dir
from test_rollout_stream import Interrupt, arrays, max_diffs, stop_after

DEVICE = os.environ.get("STAGE_TEST_DEVICE", "cpu")
N_FRAMES = 12
SEEDS = [0, 1]
# bf16 keeps 8 bits of mantissa: measured max |latent diff| to fp32 of 0.08-0.16 over 12 frames of the tiny
# random model (latents of unit scale); another seed moves them by ~1.
BF16_LATENT_TOL = 0.3
# aot_eager runs the same kernels as eager (measured: equal latents); inductor fuses them, which moves the last bits
COMPILED_LATENT_TOL = 1e-4


@pytest.fixture(scope="module")
def setup(rollout_inputs):
    cfg, paths, _ = rollout_inputs
    cfg = {**cfg, "rollout": {**cfg["rollout"], "device": DEVICE}}
    codec = load_codec(cfg["autoencoder"], paths["autoencoder"], DEVICE)
    model, conditions, info = load_for_rollout(paths["checkpoint"], cfg, DEVICE)
    return cfg, paths, codec, model, conditions, info


def run(setup, out, seeds=SEEDS, model=None, rollout_cfg=None, **kw):
    cfg, paths, codec, loaded, conditions, info = setup
    cfg = {**cfg, "rollout": {**cfg["rollout"], **(rollout_cfg or {})}}
    job = Job("full", paths["scenes"][:2], out, LatentCache(paths["cache"]), seeds=seeds, n_frames=N_FRAMES,
              data_dir=paths["data"], dataroot=paths["dataroot"])
    return rollout(Generator(model or loaded, conditions, codec, info), job, cfg, progress=False, **kw)


@pytest.fixture(scope="module")
def fp32(setup, tmp_path_factory):
    root = tmp_path_factory.mktemp("fp32") / "full"
    assert run(setup, root)["status"] == "done"
    return root


def streams(setup):
    return [(scene, seed) for scene in setup[1]["scenes"][:2] for seed in SEEDS]


def test_bf16_rollout_keeps_bf16_buffers_on_the_device_resumes_and_stays_near_fp32(setup, fp32, tmp_path):
    root, bf16 = tmp_path / "full", {"precision": "bf16", "checkpoint_every": 10}
    with pytest.raises(Interrupt):
        run(setup, root, rollout_cfg=bf16, on_frame=stop_after(10))
    for scene, seed in streams(setup):
        state = load_state(latest_state(work_dir(stream_dir(root, scene, seed)) / "state"), DEVICE)
        entries = [f for s in range(len(state.buffers)) for f in state.buffers[s].get(-1)]
        assert {f.dtype for f in entries} == {torch.bfloat16} and state.buffers.dtype == torch.bfloat16
        assert {f.device.type for f in entries} == {torch.device(DEVICE).type}
    assert run(setup, root, rollout_cfg=bf16, resume=True)["status"] == "done"
    for scene, seed in streams(setup):
        latent, _ = max_diffs(arrays(root, scene, seed), arrays(fp32, scene, seed))
        assert 0 < latent <= BF16_LATENT_TOL, f"{scene}/seed-{seed}: bf16 latents differ from fp32 by {latent}"


def test_streams_in_batches_of_one_equal_the_whole_batch(setup, fp32, tmp_path):
    result = run(setup, tmp_path / "full", rollout_cfg={"batch_streams": 1})
    assert result["status"] == "done"
    for scene, seed in streams(setup):
        meta = result["streams"][f"{scene}/seed-{seed}"]["meta"]
        assert meta["batch"] == [f"{scene}/seed-{seed}"] and meta["memory_plan"]["batch_streams"] == 1
        latent, frame = max_diffs(arrays(tmp_path / "full", scene, seed), arrays(fp32, scene, seed))
        assert latent <= 1e-4 and frame <= 1, f"{scene}/seed-{seed}: {latent}, {frame}"


def test_compiled_rollout_agrees_with_eager(setup, fp32, tmp_path):
    cfg, paths = setup[0], setup[1]
    model = load_for_rollout(paths["checkpoint"], cfg, DEVICE)[0]  # compiled in place: a model of its own
    backend = "inductor" if DEVICE.startswith("cuda") else "aot_eager"  # inductor on a CPU compiles for minutes
    result = run(setup, tmp_path / "full", model=model,
                 rollout_cfg={"compile": {"enabled": True, "backend": backend, "mode": None}})
    assert result["status"] == "done" and model.unet._compiled
    for scene, seed in streams(setup):
        latent, frame = max_diffs(arrays(tmp_path / "full", scene, seed), arrays(fp32, scene, seed))
        assert latent <= COMPILED_LATENT_TOL and frame <= 1, f"{scene}/seed-{seed}: {latent}, {frame}"


def test_rollout_meta_records_the_plan_and_it_matches_the_buffers(setup, fp32):
    import json

    for scene, seed in streams(setup):
        d = stream_dir(fp32, scene, seed)
        meta, timings = (json.loads((d / n).read_text()) for n in ("meta.json", "timings.json"))
        plan = meta["memory_plan"]
        # the buffers are full after buffer_size frames: the plan counts their bytes exactly
        assert N_FRAMES >= setup[0]["model"]["htft"]["buffer_size"]
        assert plan["step_buffers_bytes"] == timings["buffer_bytes"] > 0
        assert plan["buffers_bytes"] == len(meta["batch"]) * timings["buffer_bytes"]
        assert plan["peak_bytes"] > plan["buffers_bytes"] + plan["weights_bytes"]
        assert np.isfinite(plan["activation_bytes"]) and plan["activation_bytes"] > 0
