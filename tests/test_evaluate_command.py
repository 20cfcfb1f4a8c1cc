"""`stage evaluate` end to end on tiny fabricated rollouts and ground truth."""

import csv
import json

import numpy as np
import pytest
import torch
import yaml

from stage import cli
from conftest import empty_scene_tables
from stage import config as config_mod
from stage.data.scene_format import write_index, write_scene
from stage.errors import StageError
from stage.evaluate.backbones import file_sha256
from stage.evaluate.evaluate import evaluate

T, H, W = 81, 32, 48
SMALL = {"eval_size": [16, 24], "segment_length": 20, "fvd_clip_frames": 8, "fvd_clip_stride": 4,
         "drift_window_stride": 4}


def _gt_frames(seed):
    """A periodic texture (period 24 px) scrolling 1 px per frame: every segment sees the same content
    distribution, plus a little sensor noise."""
    rng = np.random.default_rng(seed)
    tile = rng.uniform(0, 255, (H // 4, 6, 3)).repeat(4, 0).repeat(4, 1)          # (H, 24, 3)
    world = np.tile(tile, (1, (W + T) // 24 + 2, 1))
    frames = np.stack([world[:, t:t + W] for t in range(T)])
    return np.clip(frames + rng.normal(0, 3, frames.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """<root>/gt (extracted split), <root>/rollouts/{good,degrading}, <root>/recon."""
    root = tmp_path_factory.mktemp("eval")
    names = ["scene-0000", "scene-0001"]
    rng = np.random.default_rng(7)
    for i, name in enumerate(names):
        gt = _gt_frames(i)
        write_scene(root / "gt", name, {"fps": 12.0}, {"frames": gt, "hdmap": gt, "boxmap": gt}, *empty_scene_tables(T))
        # degrading: noise grows with time (the drift the segment tables must show)
        noise_std = {"good": np.full(T, 2.0), "degrading": 100.0 * (np.arange(T) / T) ** 2}
        for variant, std in noise_std.items():
            d = root / "rollouts" / variant / name
            d.mkdir(parents=True)
            frames = np.clip(gt + rng.normal(0, 1, gt.shape) * std[:, None, None, None], 0, 255).astype(np.uint8)
            frames[0] = gt[0]
            np.save(d / "frames.npy", frames)
            (d / "meta.json").write_text(json.dumps({"variant": variant, "scene": name, "n_frames": T,
                                                     "layout_source": [["gt", 60], ["constant-velocity", T - 60]],
                                                     "gt_frames": 60}))
        (root / "recon" / name).mkdir(parents=True)
        np.save(root / "recon" / name / "frames.npy", np.clip(gt + rng.normal(0, 4, gt.shape), 0, 255).astype(np.uint8))
    write_index(root / "gt", names, {})
    return root


def _keys(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield k
            yield from _keys(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _keys(v)


def test_command_end_to_end_proxy(data, tmp_path):
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump({"evaluate": SMALL}))
    out = tmp_path / "out"
    rc = cli.main(["evaluate", "--config", str(cfg_path), "--rollouts", str(data / "rollouts"), "--ground-truth",
                   str(data / "gt"), "--reconstructions", str(data / "recon"), "--out", str(out), "--no-progress"])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["rows"]) == {"good", "degrading", "noise_floor", "ceiling"}
    # proxy labelling: nothing is called FID or FVD without a real detector
    assert not {"FID", "FVD"} & set(_keys(m))
    assert m["families"] == {"fid": "FID-proxy", "fvd": "FVD-proxy"}
    for row in ("good", "degrading", "ceiling"):
        metrics = m["rows"][row]["metrics"]
        assert {"FID-proxy", "FVD-proxy", "PSNR", "SSIM", "temporal_mad", "temporal_mad_ratio"} <= set(metrics)
        for entry in metrics.values():
            assert entry["protocol_hash"] in m["protocols"] and entry["device"] and "n" in entry
            assert not entry["name"].startswith(("FID[", "FVD["))
    good, bad = m["rows"]["good"]["metrics"], m["rows"]["degrading"]["metrics"]
    assert good["FID-proxy"]["value"] < bad["FID-proxy"]["value"]
    assert good["PSNR"]["value"] > bad["PSNR"]["value"] and good["PSNR"]["n"] == 2 * 59   # frames 1..59 paired
    assert good["FID-proxy"]["n"] == 2 * (T - 1)
    floor = m["rows"]["noise_floor"]["metrics"]["FID-proxy"]                 # real vs real, disjoint halves
    assert floor["value"] > 0 and floor["n"] + floor["n_real"] == 2 * (T - 1) and "real vs real" in floor["name"]
    assert m["rows"]["good"]["layout_source"]["scene-0000"] == [["gt", 59], ["constant-velocity", 21]]
    stats = list((out / "real_stats").glob("FID-proxy-*.npz"))
    assert len(stats) == 1 and m["real_statistics"]["fid"]["path"] == f"real_stats/{stats[0].name}"

    rows = list(csv.DictReader((out / "segments.csv").open()))
    assert list(rows[0]) == ["variant", "segment_start", "segment_end", "metric", "value", "n", "name", "protocol_hash"]

    def series(variant, metric):
        sel = [r for r in rows if r["variant"] == variant and r["metric"] == metric]
        return [int(r["segment_start"]) for r in sel], [float(r["value"]) for r in sel]

    starts, fid = series("degrading", "FID-proxy")
    assert starts == [0, 20, 40, 60]                                   # the 1-frame tail [80, 81) is dropped
    assert all(a < b for a, b in zip(fid[:-1], fid[1:])), fid          # drift: FID-proxy rises segment by segment
    starts, psnr = series("degrading", "PSNR")
    assert starts == [0, 20, 40]                                       # paired only where ground truth exists
    assert all(a > b for a, b in zip(psnr[:-1], psnr[1:])), psnr
    assert series("ground_truth", "FID-proxy")[0] == [0, 20, 40, 60]
    assert series("degrading", "FVD-proxy")[1][-1] > series("degrading", "FVD-proxy")[1][0]

    # a second run reuses the cached real statistics (same protocol hash, same file)
    m2 = evaluate(data / "rollouts", data / "gt", out, config_mod.validate({"evaluate": SMALL})["evaluate"],
                  progress=False)
    assert m2["real_statistics"] == m["real_statistics"]
    assert m2["rows"]["good"]["metrics"]["FID-proxy"]["value"] == pytest.approx(good["FID-proxy"]["value"])
    assert "ceiling" not in m2["rows"] and any("ceiling row omitted" in n for n in m2["notes"])


class _TinyInception(torch.nn.Module):
    def forward(self, x: torch.Tensor, return_features: bool = True) -> torch.Tensor:
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)


def test_torchscript_detector_names_fid(data, tmp_path):
    path = tmp_path / "inception-tiny.pt"
    torch.jit.script(_TinyInception()).save(str(path))
    sha = file_sha256(path)
    cfg = config_mod.validate({"evaluate": {**SMALL, "inception_path": str(path), "inception_sha256": sha,
                                            "inception_input_size": [16, 24]}})["evaluate"]
    m = evaluate(data / "rollouts", data / "gt", tmp_path / "out", cfg, progress=False)
    entry = m["rows"]["good"]["metrics"]["FID"]
    assert entry["name"].startswith(f"FID[inception-tiny@{sha[:8]}, 16x24 crop, 1 f, N=")
    assert m["protocols"][entry["protocol_hash"]]["detector_sha256"] == sha
    assert "FVD-proxy" in m["rows"]["good"]["metrics"] and "FVD" not in m["rows"]["good"]["metrics"]


def test_clear_errors(data, tmp_path, capsys):
    cfg = config_mod.validate({"evaluate": SMALL})["evaluate"]
    with pytest.raises(StageError, match="does not exist"):
        evaluate(tmp_path / "nope", data / "gt", tmp_path / "out", cfg, progress=False)
    bad = tmp_path / "rollouts" / "full" / "scene-0000"
    bad.mkdir(parents=True)
    np.save(bad / "frames.npy", np.zeros((T, H // 2, W, 3), np.uint8))
    (bad / "meta.json").write_text(json.dumps({"gt_frames": T}))
    with pytest.raises(StageError, match=r"frames\.npy: frames are 16x48 but the ground truth"):
        evaluate(tmp_path / "rollouts", data / "gt", tmp_path / "out", cfg, progress=False)
    rc = cli.main(["evaluate", "--rollouts", str(tmp_path / "rollouts"), "--ground-truth", str(data / "gt"),
                   "--out", str(tmp_path / "out"), "--no-progress"])
    assert rc == 2 and "16x48" in capsys.readouterr().err
