"""Batched streaming rollouts end to end on a tiny model: streams independent of their batch, resume
equivalence per stream, teacher forcing, bounded buffers, the output folders."""

import json
import os
import shutil
import signal

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from stage.formats.latent_cache import LatentCache
from stage.formats.rollout_folder import stream_dir
from stage.latents.autoencoder import load_codec
from stage.model import FrameConditions, new_buffers, sample_frame
from stage.rollout import Generator, Job, rollout
from stage.rollout.loading import load_for_rollout
from stage.rollout.state import latest_state, load_state, states
from stage.rollout.streaming import find_shard, work_dir

N_FRAMES = 60  # the synthetic long scenes have 49 recorded frames: the last 11 are forecast
SEEDS = [0, 1]
SHORT = 20  # frames of the runs compared with the first frames of the reference batch
# A stream computed in another batch (other size or lanes) differs only in the last bits of the batched
# kernels, and the rollout carries them on: the max |latent diff| grows about linearly with the frame, to
# 5e-5 after 20 frames and 2.1e-4 after 60 (measured; the random-weights latents reach |36|), 0 or 1 level
# in uint8 frames. BATCH_TOL leaves 10x room. Another seed moves latents by more than 1.
LATENT_TOL = 1e-4  # what one batch recomputed alone may differ by
BATCH_TOL = 2e-3
FRAME_TOL = 1


@pytest.fixture(scope="module")
def setup(rollout_inputs):
    cfg, paths, _ = rollout_inputs
    codec = load_codec(cfg["autoencoder"], paths["autoencoder"])
    model, conditions, info = load_for_rollout(paths["checkpoint"], cfg)
    return cfg, paths, codec, model, conditions, info


def run(setup, out, scenes=None, seeds=SEEDS, **kw):
    cfg, paths, codec, model, conditions, info = setup
    job = Job("full", scenes or paths["scenes"][:2], out, LatentCache(paths["cache"]), seeds=seeds,
              n_frames=kw.pop("n_frames", N_FRAMES), teacher_forced=kw.pop("teacher_forced", False),
              data_dir=paths["data"], dataroot=paths["dataroot"])
    return rollout(Generator(model, conditions, codec, info), job, cfg, progress=False, **kw)


def arrays(root, scene, seed):
    """(latents (T, C, h, w), frames uint8 (T, H, W, 3)) of stream (scene, seed) under `root`."""
    d = stream_dir(root, scene, seed)
    return load_file(str(d / "latents.safetensors"))["latents"], np.load(d / "frames.npy")


def max_diffs(a, b, n=None):
    """(max |latent diff|, max |uint8 frame diff|) over the first n frames of two streams' arrays."""
    (la, fa), (lb, fb) = a, b
    n = n or len(la)
    return (float((la[:n] - lb[:n]).abs().max()),
            int(np.abs(fa[:n].astype(int) - fb[:n].astype(int)).max()))


def assert_close(a, b, n=None, what=""):
    latent, frame = max_diffs(a, b, n)
    assert latent <= BATCH_TOL and frame <= FRAME_TOL, f"{what}: latents differ by {latent}, frames by {frame}"


@pytest.fixture(scope="module")
def uninterrupted(setup, tmp_path_factory):
    """The reference batch: the first two scenes x seeds 0, 1 (four streams), N_FRAMES frames."""
    root = tmp_path_factory.mktemp("rollouts") / "full"
    result = run(setup, root)
    assert result["status"] == "done"
    return root


class Interrupt(Exception):
    pass


def stop_after(frame):
    def stop(t):
        if t == frame:
            raise Interrupt
    return stop


@pytest.fixture(scope="module")
def partial(setup, tmp_path_factory):
    """The reference batch killed after frame 52: states after frames 40 and 50 kept per stream."""
    root = tmp_path_factory.mktemp("partial") / "full"
    with pytest.raises(Interrupt):
        run(setup, root, on_frame=stop_after(52))
    return root


def copy_of(root, tmp_path):
    dst = tmp_path / "rollouts" / "full"
    shutil.copytree(root, dst)
    return dst


def streams_of(setup, scenes=None, seeds=SEEDS):
    return [(scene, seed) for scene in (scenes or setup[1]["scenes"][:2]) for seed in seeds]


def assert_bitwise_equal(setup, root, reference):
    for scene, seed in streams_of(setup):
        (la, fa), (lb, fb) = arrays(root, scene, seed), arrays(reference, scene, seed)
        assert torch.equal(la, lb) and np.array_equal(fa, fb), f"{scene}/seed-{seed}"  # forecast frames included
        assert not work_dir(stream_dir(root, scene, seed)).exists()


def test_resumed_batch_makes_the_same_frames_per_stream(setup, uninterrupted, partial, tmp_path):
    root = copy_of(partial, tmp_path)
    for scene, seed in streams_of(setup):
        out = stream_dir(root, scene, seed)
        assert not out.exists() and latest_state(work_dir(out) / "state").name == "frame-000050"
    result = run(setup, root, resume=True)
    assert result["status"] == "done"
    assert [s["meta"]["resumed_at"] for s in result["streams"].values()] == [[50]] * 4
    assert_bitwise_equal(setup, root, uninterrupted)


def test_a_stream_with_a_damaged_newest_state_moves_the_batch_to_the_common_older_one(setup, uninterrupted, partial,
                                                                                      tmp_path, capsys):
    root = copy_of(partial, tmp_path)
    scene, seed = streams_of(setup)[2]
    newest = states(work_dir(stream_dir(root, scene, seed)) / "state")[0]
    (newest / "state.safetensors").write_bytes(b"")
    capsys.readouterr()
    result = run(setup, root, resume=True)
    printed = capsys.readouterr().out
    assert f"{newest / 'state.safetensors'}" in printed and "resuming from the older state frame-000040" in printed
    assert f"{streams_of(setup)[0][0]}/seed-0: resuming from the older state frame-000040, the newest one" in printed
    assert [s["meta"]["resumed_at"] for s in result["streams"].values()] == [[40]] * 4
    assert_bitwise_equal(setup, root, uninterrupted)


def test_sigterm_writes_every_streams_state_and_resumes_bitwise(setup, uninterrupted, tmp_path, capsys):
    root = tmp_path / "full"

    def term_at_13(t):  # as a cluster preempts a job: the state is written after the frame in progress
        if t == 13:
            os.kill(os.getpid(), signal.SIGTERM)

    assert run(setup, root, on_frame=term_at_13)["status"] == "stopped"
    assert "SIGTERM received; state written at frame 14" in capsys.readouterr().out
    for scene, seed in streams_of(setup):
        assert latest_state(work_dir(stream_dir(root, scene, seed)) / "state").name == "frame-000014"
    result = run(setup, root, resume=True)
    assert [s["meta"]["resumed_at"] for s in result["streams"].values()] == [[14]] * 4
    assert_bitwise_equal(setup, root, uninterrupted)


def test_another_batch_restarts_partial_states_but_keeps_finished_streams(setup, uninterrupted, partial, tmp_path,
                                                                          capsys):
    scenes = setup[1]["scenes"][:2]
    root = copy_of(partial, tmp_path)
    capsys.readouterr()
    result = run(setup, root, seeds=[0], n_frames=N_FRAMES, resume=True)  # half the batch it was started with
    printed = capsys.readouterr().out
    assert "starting over: the partial rollout in" in printed and "batch" in printed and "lanes" not in printed
    assert [s["meta"]["resumed_at"] for s in result["streams"].values()] == [[]] * 2
    for scene in scenes:
        assert_close(arrays(root, scene, 0), arrays(uninterrupted, scene, 0), what=scene)

    done = copy_of(uninterrupted, tmp_path / "finished")
    before = {p: p.stat().st_mtime_ns for p in done.rglob("*") if p.is_file()}
    result = run(setup, done, seeds=[0, 1, 2], resume=True)  # the batch list is no part of a finished identity
    printed = capsys.readouterr().out
    assert printed.count("is already complete") == 4
    assert {p: p.stat().st_mtime_ns for p in before} == before
    new = [f"{scene}/seed-2" for scene in scenes]
    assert result["streams"][new[0]]["meta"]["batch"] == new
    assert result["streams"][f"{scenes[0]}/seed-0"]["meta"]["batch"] == [f"{s}/seed-{k}" for s in scenes
                                                                          for k in SEEDS]


def test_streams_do_not_depend_on_the_rest_of_the_batch(setup, uninterrupted, tmp_path):
    a, b, c = setup[1]["scenes"]
    ref = {s: arrays(uninterrupted, *s) for s in streams_of(setup)}
    other_seed = tmp_path / "seed" / "full"
    run(setup, other_seed, scenes=[a, b], seeds=[0, 2], n_frames=SHORT)
    other_scene = tmp_path / "scene" / "full"
    run(setup, other_scene, scenes=[a, c], seeds=SEEDS, n_frames=SHORT)
    for root, kept in ((other_seed, [(a, 0), (b, 0)]), (other_scene, [(a, 0), (a, 1)])):
        for stream in kept:
            assert_close(arrays(root, *stream), ref[stream], SHORT, f"{root.parent.name}: {stream}")
    # the changed streams did change, by far more than the tolerance: a seed moves latents by ~1, another
    # scene (of the random-weights model, whose noise outweighs its conditions) by ~0.04
    assert max_diffs(arrays(other_seed, a, 2), ref[(a, 1)], SHORT)[0] > 1e3 * LATENT_TOL
    assert max_diffs(arrays(other_scene, c, 0), ref[(b, 0)], SHORT)[0] > 1e2 * LATENT_TOL


def test_first_frames_equal_single_stream_and_two_lane_rollouts(setup, uninterrupted, tmp_path):
    a, b = setup[1]["scenes"][:2]
    for scene, seed in ((a, 0), (b, 1)):
        single = tmp_path / f"{scene}-{seed}" / "full"
        result = run(setup, single, scenes=[scene], seeds=[seed], n_frames=SHORT)
        assert result["streams"][f"{scene}/seed-{seed}"]["meta"]["batch"] == [f"{scene}/seed-{seed}"]
        assert_close(arrays(single, scene, seed), arrays(uninterrupted, scene, seed), SHORT, f"{scene}/{seed}")
    lanes = tmp_path / "lanes" / "full"
    result = run(setup, lanes, n_frames=SHORT, lanes=2)
    assert {s["meta"]["lanes"] for s in result["streams"].values()} == {2}
    for stream in streams_of(setup):
        assert_close(arrays(lanes, *stream), arrays(uninterrupted, *stream), SHORT, f"two lanes: {stream}")


def test_teacher_forced_frames_condition_on_the_real_latents(setup, uninterrupted, tmp_path):
    cfg, paths, codec, model, conditions, info = setup
    scene, n = paths["scenes"][0], 8
    root = tmp_path / "one_step" / "full"
    result = run(setup, root, scenes=[scene], seeds=[0], n_frames=n, teacher_forced=True)
    meta = result["streams"][f"{scene}/seed-0"]["meta"]
    assert meta["condition"] == "real" and meta["settings"]["condition"] == "real"
    got = arrays(root, scene, 0)[0]
    generated = arrays(uninterrupted, scene, 0)[0][:n]

    # the loop by hand: frame t conditioned on the cache's latent of frame t-1 (frame 0 on frame 0's)
    shard = find_shard(LatentCache(paths["cache"]), scene)
    real = shard.get("latents", slice(0, n)).float()
    anchor = conditions.encode_anchor(real[:1])
    steps = cfg["rollout"]["num_steps"] or model.diffusion_cfg["num_steps"]
    buffers, gen, want = new_buffers(model, steps), torch.Generator().manual_seed(0), []
    with torch.no_grad():
        for t in range(n):
            boxes = conditions.encode_boxes(shard.get("box_features", slice(t, t + 1)).float(),
                                            shard.get("box_mask", slice(t, t + 1)))
            cond = FrameConditions(real[max(t - 1, 0):max(t, 1)], shard.get("hdmap_latents", slice(t, t + 1)).float(),
                                   boxes, None if t == 0 else anchor)
            want.append(sample_frame(model, cond, buffers, num_steps=steps, generator=gen,
                                     reference=cond.cond_latent)[0])
    want = torch.stack(want)
    assert float((got - want).abs().max()) <= LATENT_TOL
    assert float((got[0] - generated[0]).abs().max()) <= LATENT_TOL  # frame 0 is the same in both modes
    assert float((got[1:] - generated[1:]).abs().amax(dim=(1, 2, 3)).min()) > 1e3 * LATENT_TOL


def test_free_rollouts_keep_the_first_frames_channel_means(setup, uninterrupted):
    paths = setup[1]
    for scene, seed in streams_of(setup):
        first = find_shard(LatentCache(paths["cache"]), scene).get("latents", slice(0, 1)).float()
        means = arrays(uninterrupted, scene, seed)[0].mean((-2, -1))
        assert float((means - first.mean((-2, -1))).abs().max()) <= LATENT_TOL, f"{scene}/{seed}"


def test_teacher_forced_beyond_the_recorded_frames_is_refused(setup, tmp_path):
    from stage.errors import StageError

    with pytest.raises(StageError, match=r"49 recorded frames and a teacher-forced rollout of 50"):
        run(setup, tmp_path / "full", seeds=[0], n_frames=50, teacher_forced=True)


def test_buffers_hold_at_most_n_frames_per_stream(setup, tmp_path):
    size = setup[0]["model"]["htft"]["buffer_size"]
    scene = setup[1]["scenes"][0]
    roots = [work_dir(stream_dir(tmp_path / "b", scene, seed)) / "state" for seed in SEEDS]
    seen = []

    def inspect(t):
        for root in roots:
            last = latest_state(root)
            if last is not None and last.name == f"frame-{t + 1:06d}":  # written after this frame
                st = load_state(last)
                assert all(f.shape[0] == 1 for s in range(len(st.buffers)) for f in st.buffers[s].get(-1))
                seen.append((st.next_frame, [len(st.buffers[s]) for s in range(len(st.buffers))],
                             st.buffers.nbytes()))

    result = run(setup, tmp_path / "b", scenes=[scene], n_frames=40, on_frame=inspect)
    assert [s[0] for s in seen] == [10, 10, 20, 20, 30, 30]
    for next_frame, lengths, _ in seen:
        assert lengths == [min(next_frame, size)] * len(lengths)
    timings = result["streams"][f"{scene}/seed-0"]["timings"]
    assert seen[2][2] == seen[5][2] == timings["buffer_bytes"]  # constant once full, one stream's share


def test_output_folders_are_complete_and_right(setup, uninterrupted):
    cfg, paths = setup[0], setup[1]
    scenes = paths["scenes"][:2]
    h, w = cfg["extract"]["height"], cfg["extract"]["width"]
    assert sorted(p.name for p in uninterrupted.iterdir()) == sorted(scenes)
    assert [p.name for p in (uninterrupted / scenes[0]).iterdir() if p.name.startswith(".")] == []
    out = stream_dir(uninterrupted, scenes[1], 1)
    frames = np.load(out / "frames.npy")
    assert frames.dtype == np.uint8 and frames.shape == (N_FRAMES, h, w, 3)
    assert frames.std() > 0
    meta = json.loads((out / "meta.json").read_text())
    gt = meta["gt_frames"]
    assert gt == 49 and meta["n_frames"] == N_FRAMES and meta["scene"] == scenes[1] and meta["variant"] == "full"
    assert meta["seed"] == 1 and meta["settings"]["seed"] == 1 and meta["condition"] == "generated"
    assert meta["batch"] == [f"{s}/seed-{k}" for s in scenes for k in SEEDS]
    assert meta["layout_source"] == ["gt"] * gt + ["lane_follow"] * (N_FRAMES - gt)
    assert meta["layout_runs"] == [["gt", 0, gt], ["lane_follow", gt, N_FRAMES]]
    assert meta["checkpoint"]["sha256"] and meta["config_hash"]
    strip = np.asarray(Image.open(out / "strip.png"))
    assert strip.shape == (h, 2 * w, 3) and meta["strip_frames"] == [1, 40]  # T = 1, 40 exist of 1..600
    assert np.array_equal(strip[h // 2:, w:], frames[39, h // 2:])  # the label sits in the top-left corner only
    latents = load_file(str(out / "latents.safetensors"))["latents"]
    assert latents.shape == (N_FRAMES, 4, h // 8, w // 8) and torch.isfinite(latents).all()
    assert not torch.equal(latents, arrays(uninterrupted, scenes[1], 0)[0])  # its own seed
    assert sorted(p.name for p in out.iterdir()) == ["frames.npy", "latents.safetensors", "meta.json", "strip.png",
                                                     "timings.json", "video.mp4"]
    timings = json.loads((out / "timings.json").read_text())
    assert len(timings["per_frame_s"]) == N_FRAMES and timings["frames_per_second"] > 0 and timings["peak_rss_mb"] > 0
    assert timings["batch_size"] == 4 and timings["stream_frames_per_second"] > timings["frames_per_second"]
    import imageio.v2 as imageio
    reader = imageio.get_reader(out / "video.mp4")
    assert reader.count_frames() == N_FRAMES
    reader.close()
    # what the evaluation reads
    from stage.evaluate.inputs import find_rollouts
    found = find_rollouts(uninterrupted.parent)["full"]
    assert sorted(found) == sorted((s, k) for s in scenes for k in SEEDS)
    video = found[(scenes[1], 1)]
    assert video.gt_frames == gt and video.layout[gt - 1:gt + 1] == ["gt", "lane_follow"]
