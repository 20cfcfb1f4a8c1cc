"""`stage evaluate` on damaged inputs: one line naming the file, exit status 2, no metrics file; damaged or
stale real features (real_stats/) are recomputed, intact ones reused untouched."""

import json
import shutil

import numpy as np
import pytest
import torch
import yaml

from conftest import empty_scene_tables
from corruption import WAYS, assert_refused, corrupt, run_cli
from stage.formats.rollout_folder import write_latents
from stage.formats.scene import write_index, write_scene

T, H, W = 41, 32, 48
SMALL = {"eval_size": [16, 24], "segment_length": 20, "fvd_clip_frames": 8, "fvd_clip_stride": 4,
         "drift_window_stride": 4, "collapse": {"window": 20, "stride": 10}, "bootstrap": {"resamples": 1000},
         "claims": []}
SCENE = "scene-0000"
STREAM = f"full/{SCENE}/seed-0"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """<root>/gt (extracted split of one scene), <root>/rollouts/full/<scene>/seed-0 (frames, meta, latents),
    <root>/config.yaml and <root>/baseline (a finished evaluation with its real features)."""
    root = tmp_path_factory.mktemp("eval-corrupt")
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 256, (T, H, W, 3), dtype=np.uint8)
    write_scene(root / "gt", SCENE, {"fps": 12.0}, {"frames": gt, "hdmap": gt, "boxmap": gt}, *empty_scene_tables(T))
    write_index(root / "gt", [SCENE], {})
    d = root / "rollouts" / STREAM
    d.mkdir(parents=True)
    np.save(d / "frames.npy", np.clip(gt + rng.normal(0, 20, gt.shape), 0, 255).astype(np.uint8))
    (d / "meta.json").write_text(json.dumps({"variant": "full", "scene": SCENE, "seed": 0, "n_frames": T,
                                             "layout_source": [["gt", T]], "gt_frames": T, "condition": "generated"}))
    write_latents(d / "latents.safetensors", torch.zeros((T, 4, H // 8, W // 8)), {"scene": SCENE})
    (root / "config.yaml").write_text(yaml.safe_dump({"evaluate": SMALL}))
    rc, _, err = evaluate_cli(None, root, root / "rollouts", root / "gt", root / "baseline")
    assert rc == 0, err[-3000:]
    return root


def evaluate_cli(capsys, root, rollouts, gt, out):
    argv = ["evaluate", "--config", root / "config.yaml", "--rollouts", rollouts, "--ground-truth", gt,
            "--out", out, "--no-progress"]
    if capsys is None:  # module fixtures have no capsys
        from stage import cli
        return cli.main([str(a) for a in argv]), "", ""
    return run_cli(capsys, *argv)


def fid(out) -> float:
    return json.loads((out / "metrics.json").read_text())["variants"]["full"]["overall"]["FID-proxy"]["mean"]


def real_stats(out, family="FID-proxy"):
    (path,) = (out / "real_stats").glob(f"{family}-*.npz")
    return path


INPUTS = {"rollout meta.json": ("rollouts", f"{STREAM}/meta.json"),
          "rollout frames.npy": ("rollouts", f"{STREAM}/frames.npy"),
          "rollout latents.safetensors": ("rollouts", f"{STREAM}/latents.safetensors"),
          "ground-truth frames.npy": ("gt", f"{SCENE}/frames.npy")}


@pytest.mark.parametrize("how", WAYS)
@pytest.mark.parametrize("kind", list(INPUTS))
def test_damaged_input_is_refused(kind, how, data, tmp_path, capsys):
    folder, rel = INPUTS[kind]
    for name in ("rollouts", "gt"):
        shutil.copytree(data / name, tmp_path / name)
    damaged = tmp_path / folder / rel
    corrupt(damaged, how)
    rc, _, err = evaluate_cli(capsys, data, tmp_path / "rollouts", tmp_path / "gt", tmp_path / "out")
    assert_refused(rc, err, damaged)
    assert str(damaged) in err
    assert not (tmp_path / "out" / "metrics.json").exists() and not (tmp_path / "out" / "segments.csv").exists()


def _features(path):
    with np.load(path) as f:
        return json.loads(str(f["info_json"])), f["frames_0"].copy()


@pytest.mark.parametrize("how", WAYS)
def test_damaged_real_features_are_recomputed(how, data, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(data / "baseline", out)
    stats = real_stats(out)
    corrupt(stats, how)
    rc, printed, err = evaluate_cli(capsys, data, data / "rollouts", data / "gt", out)
    assert rc == 0, err[-3000:]
    assert f"{stats}: not a readable real-feature file" in printed and "recomputing" in printed
    assert fid(out) == pytest.approx(fid(data / "baseline"), rel=1e-9)
    info, again = _features(stats)
    assert info["real_frames_digest"] and np.array_equal(again, _features(real_stats(data / "baseline"))[1])


def test_real_statistics_follow_the_ground_truth(data, tmp_path, capsys):
    out, gt = tmp_path / "out", tmp_path / "gt"
    shutil.copytree(data / "baseline", out)
    shutil.copytree(data / "gt", gt)
    paths = [real_stats(out, f) for f in ("FID-proxy", "FVD-proxy")]
    before = [p.stat().st_mtime_ns for p in paths]

    rc, printed, err = evaluate_cli(capsys, data, data / "rollouts", gt, out)  # same ground truth: reused
    assert rc == 0 and "recomputing" not in printed, err[-3000:]
    assert [p.stat().st_mtime_ns for p in paths] == before
    assert fid(out) == pytest.approx(fid(data / "baseline"), rel=1e-12)

    frames = np.load(gt / SCENE / "frames.npy", mmap_mode="r+")
    frames[10] = 0  # one scored ground-truth frame changes
    frames.flush()
    del frames
    rc, printed, err = evaluate_cli(capsys, data, data / "rollouts", gt, out)
    assert rc == 0, err[-3000:]
    assert f"{paths[0]}: computed from other ground truth" in printed and "real_frames_digest" in printed
    assert all(p.stat().st_mtime_ns != t for p, t in zip(paths, before))
    assert fid(out) != pytest.approx(fid(data / "baseline"), rel=1e-6)
    digest = json.loads((out / "metrics.json").read_text())["real_statistics"]["fid"]["ground_truth_digest"]
    assert digest != json.loads((data / "baseline" / "metrics.json").read_text())["real_statistics"]["fid"][
        "ground_truth_digest"]
