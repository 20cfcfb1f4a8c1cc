"""`stage evaluate` end to end on small fabricated streams, ground truth, reconstructions and one-step runs:
metrics.json against its documented schema, the reference rows, intervals, collapse and verdicts."""

import csv
import json

import jsonschema
import numpy as np
import pytest
import torch
import yaml

from conftest import empty_scene_tables
from stage import cli
from stage import config as config_mod
from stage.evaluate.backbones import file_sha256
from stage.evaluate.evaluate import evaluate
from stage.formats.metrics import DIFFERENCE_COLUMNS, GATES, SCHEMA_PATH, SEGMENT_COLUMNS, STREAM_COLUMNS
from stage.formats.scene import write_index, write_scene

T, H, W = 61, 32, 48
SCENES = ("scene-0000", "scene-0001")
SEEDS = (0, 1)
ONE_STEP_FRAMES = 25
SMALL = {"eval_size": [16, 24], "segment_length": 20, "fvd_clip_frames": 8, "fvd_clip_stride": 4,
         "drift_window_stride": 4, "collapse": {"window": 20, "stride": 10}, "bootstrap": {"resamples": 1000},
         "claims": [{"claim": "the model beats noise", "kind": "improves", "metrics": ["KID", "PSNR"],
                     "frames": [20, 60],
                     "comparisons": [["good", "noisy"], ["still_photograph", "noisy"], ["noisy", "still_photograph"]]},
                    {"claim": "61 frames without collapse", "kind": "survives", "frames": [0, 61],
                     "comparisons": [["good"], ["noisy"], ["missing_variant"]]}]}


def gt_frames(seed, n=T):
    """A periodic texture (period 24 px) scrolling 1 px per frame, plus a little sensor noise."""
    rng = np.random.default_rng(seed)
    tile = rng.uniform(0, 255, (H // 4, 6, 3)).repeat(4, 0).repeat(4, 1)          # (H, 24, 3)
    world = np.tile(tile, (1, (W + n) // 24 + 2, 1))
    frames = np.stack([world[:, t:t + W] for t in range(n)])
    return np.clip(frames + rng.normal(0, 3, frames.shape), 0, 255).astype(np.uint8)


def settings(scene, seed, **override):
    return {"scene": scene, "seed": seed, "n_frames": T, "num_steps": 4, "config_hash": "cfg0",
            "autoencoder_hash": "ae0", "forecaster": "lane_follow", "cache_sha256": f"shard-{scene}", **override}


def write_stream(root, variant, scene, seed, frames, condition="generated", **override):
    d = root / variant / scene / f"seed-{seed}"
    d.mkdir(parents=True)
    np.save(d / "frames.npy", frames)
    meta = {"variant": variant, "scene": scene, "seed": seed, "n_frames": len(frames), "gt_frames": len(frames),
            "layout_source": [["gt", len(frames)]], "condition": condition,
            "settings": settings(scene, seed, n_frames=len(frames), **override)}
    (d / "meta.json").write_text(json.dumps(meta))
    return d


def degrading(gt, rng):
    std = 120.0 * (np.arange(len(gt)) / len(gt)) ** 2
    return np.clip(gt + rng.normal(0, 1, gt.shape) * std[:, None, None, None], 0, 255).astype(np.uint8)


def fabricate(root, variants=("good", "noisy", "degrading"), one_step=True):
    """<root>/gt (extracted split), rollouts/<variant>/<scene>/seed-<seed>, recon/<scene>, one_step/good/..."""
    for i, scene in enumerate(SCENES):
        gt = gt_frames(i)
        write_scene(root / "gt", scene, {"fps": 12.0}, {"frames": gt, "hdmap": gt, "boxmap": gt},
                    *empty_scene_tables(T))
        (root / "recon" / scene).mkdir(parents=True)
        rng = np.random.default_rng(50 + i)
        recon = np.clip(gt + rng.normal(0, 4, gt.shape), 0, 255).astype(np.uint8)
        np.save(root / "recon" / scene / "frames.npy", recon)
        for seed in SEEDS:
            rng = np.random.default_rng(100 * i + seed)
            made = {"good": lambda: np.clip(gt + rng.normal(0, 2, gt.shape), 0, 255).astype(np.uint8),
                    "noisy": lambda: rng.integers(0, 256, gt.shape, dtype=np.uint8),
                    "degrading": lambda: degrading(gt, rng)}
            for variant in variants:
                frames = made[variant]()
                frames[0] = gt[0]
                write_stream(root / "rollouts", variant, scene, seed, frames)
        if one_step:
            rng = np.random.default_rng(7 + i)
            frames = gt[:ONE_STEP_FRAMES] + rng.normal(0, 2, (ONE_STEP_FRAMES, H, W, 3))
            frames = np.clip(frames, 0, 255).astype(np.uint8)
            write_stream(root / "one_step", "good", scene, SEEDS[0], frames, condition="real")
    write_index(root / "gt", list(SCENES), {})
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return fabricate(tmp_path_factory.mktemp("eval"))


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    """The CLI run every test below reads: (metrics dict, out folder, printed lines)."""
    tmp = tmp_path_factory.mktemp("eval-out")
    (tmp / "config.yaml").write_text(yaml.safe_dump({"evaluate": SMALL}))
    out = tmp / "out"
    rc = cli.main(["evaluate", "--config", str(tmp / "config.yaml"), "--rollouts", str(data / "rollouts"),
                   "--one-step", str(data / "one_step"), "--ground-truth", str(data / "gt"), "--reconstructions",
                   str(data / "recon"), "--out", str(out), "--metrics", str(tmp / "metrics.json"), "--no-progress"])
    assert rc == 0
    return json.loads((tmp / "metrics.json").read_text()), out


def _keys(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield k
            yield from _keys(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _keys(v)


def test_metrics_json_follows_the_documented_schema(run):
    m, _ = run
    jsonschema.validate(m, yaml.safe_load(SCHEMA_PATH.read_text()))
    assert m["format_version"] == 2
    assert m["families"] == {"fid": "FID-proxy", "fvd": "FVD-proxy", "kid": "KID-proxy"}
    assert not {"FID", "FVD", "KID"} & set(_keys(m))         # nothing is called FID/KID/FVD without real detectors
    assert m["streams"] == [{"scene": s, "seed": seed} for s in SCENES for seed in SEEDS]
    assert m["segments"] == [[0, 20], [20, 40], [40, 60]]     # the 1-frame tail [60, 61) is not a segment
    assert set(m["variants"]) == {"good", "noisy", "degrading", "ceiling", "still_photograph", "persistence",
                                  "real_floor"}
    def inside(e, metric):   # a mean lies in its percentile interval; a pooled score need not (FVD is biased in N)
        slack = 1e-9 * max(1.0, abs(e["mean"]))
        return e["ci_low"] <= e["ci_high"] if metric == "FVD-proxy" else \
            e["ci_low"] - slack <= e["mean"] <= e["ci_high"] + slack

    for name, row in m["variants"].items():
        assert row["streams"] == 4 and len(row["time_to_collapse"]) == len(row["drift_ratio"]) == 4
        for metric, entries in row["segments"].items():
            assert [[e["start"], e["end"]] for e in entries] == m["segments"]
            for e in entries:
                assert e["n_streams"] == 4 and inside(e, metric), (name, metric, e)
        for metric, e in row["overall"].items():
            assert inside(e, metric) and row["names"][metric].startswith(metric + "["), (name, metric, e)
    assert set(m["variants"]["real_floor"]["overall"]) == {"KID-proxy", "FID-proxy", "FVD-proxy"}
    assert {"PSNR", "SSIM", "KID-proxy", "FID-proxy", "FVD-proxy"} <= set(m["variants"]["good"]["overall"])
    assert m["bootstrap"] == {"resamples": 1000, "seed": 0, "level": 0.95, "unit": "stream", "method": "percentile"}
    assert m["variants"]["good"]["names"]["KID-proxy"] == \
        "KID-proxy[proxy2d-v1, 16x24 crop, 1 f, all scored frames, 4 streams]"


def test_trivial_baselines_and_references_rank_as_they_must(run):
    m, _ = run
    kid = {v: row["overall"]["KID-proxy"]["mean"] for v, row in m["variants"].items()}
    psnr = {v: row["overall"]["PSNR"]["mean"] for v, row in m["variants"].items() if "PSNR" in row["overall"]}
    assert kid["still_photograph"] < kid["noisy"] and kid["good"] < kid["still_photograph"]
    assert psnr["good"] > psnr["ceiling"] > psnr["persistence"] > psnr["still_photograph"] > psnr["noisy"]
    assert abs(kid["real_floor"]) < kid["still_photograph"]
    ceiling = m["variants"]["ceiling"]
    assert ceiling["time_to_collapse"][0] == ceiling["time_to_collapse"][1]       # one reconstruction per scene
    # the degrading variant drifts: KID-proxy rises segment by segment, and its drift ratio is > 1
    seg = [e["mean"] for e in m["variants"]["degrading"]["segments"]["KID-proxy"]]
    assert seg[0] < seg[1] < seg[2] and min(m["variants"]["degrading"]["drift_ratio"]) > 1


def test_collapse_and_claims(run):
    m, _ = run
    rows = m["variants"]
    assert m["collapse"]["threshold"] > 0 and m["collapse"]["calibration"]["ceiling_windows"] == 2 * 5
    assert rows["good"]["time_to_collapse"] == [T] * 4 and not any(rows["good"]["collapsed"])
    assert rows["noisy"]["time_to_collapse"] == [1] * 4 and all(rows["noisy"]["collapsed"])
    assert any(rows["degrading"]["collapsed"]) and min(rows["degrading"]["time_to_collapse"]) > 1
    verdicts = {(c["comparison"], c["metric"]): c for c in m["claims"]}
    assert verdicts[("still_photograph vs noisy", "KID-proxy")]["verdict"] == "held"
    assert verdicts[("noisy vs still_photograph", "KID-proxy")]["verdict"] == "contradicted"
    assert verdicts[("good vs noisy", "PSNR")]["verdict"] == "held" and \
        verdicts[("good vs noisy", "PSNR")]["better"] == "higher"
    c = verdicts[("good vs noisy", "KID-proxy")]
    assert c["better"] == "lower" and c["ci_high"] < 0 and c["frames"] == [20, 60] and c["n_streams"] == 4
    assert verdicts[("good", "survival")]["verdict"] == "held"
    assert verdicts[("noisy", "survival")]["verdict"] == "inconclusive"        # 0 of 4: upper bound 0.60
    assert m["claims_skipped"] == [{"claim": "61 frames without collapse", "comparison": "missing_variant",
                                    "metric": "survival", "reason": "no rollouts of missing_variant"}]
    assert "excludes 0" in m["verdict_rule"]


def test_one_step_scores_next_to_persistence_and_ceiling(run, data):
    m, _ = run
    one = m["one_step"]
    assert set(one) == {"good", "persistence", "latent_persistence", "ceiling"}
    for row in one.values():
        assert row["frames"] == ONE_STEP_FRAMES - 1 and row["streams"] == 2
        assert row["frame_range"] == [1, ONE_STEP_FRAMES]
        assert {"PSNR", "SSIM", "KID-proxy"} <= set(row)
    assert one["good"]["PSNR"]["mean"] > one["persistence"]["PSNR"]["mean"]
    # latent persistence: each scene's reconstruction of frame t-1 against real frame t, frames 1-24
    per_scene = []
    for scene in SCENES:
        recon = np.load(data / "recon" / scene / "frames.npy")[:ONE_STEP_FRAMES].astype(np.float64)
        gt = np.load(data / "gt" / scene / "frames.npy")[:ONE_STEP_FRAMES].astype(np.float64)
        mse = ((recon[:-1] - gt[1:]) ** 2).reshape(ONE_STEP_FRAMES - 1, -1).mean(1)
        per_scene.append(np.mean(10 * np.log10(255.0 ** 2 / mse)))
    assert one["latent_persistence"]["PSNR"]["mean"] == pytest.approx(np.mean(per_scene), abs=1e-3)
    # the reconstructions' noise costs the copy some dB
    assert one["latent_persistence"]["PSNR"]["mean"] < one["persistence"]["PSNR"]["mean"]


def test_csv_tables(run):
    m, out = run
    segs = list(csv.DictReader((out / "segments.csv").open()))
    assert tuple(segs[0]) == SEGMENT_COLUMNS
    row = next(r for r in segs if r["variant"] == "good" and r["metric"] == "KID-proxy" and r["segment_start"] == "20")
    assert row["segment_end"] == "40" and row["n_streams"] == "4" and row["protocol_hash"] in m["protocols"]
    assert float(row["mean"]) == pytest.approx(m["variants"]["good"]["segments"]["KID-proxy"][1]["mean"])
    # one protocol per metric and segment: every row but the real floor (another reference) shares it
    hashes = {r["variant"]: r["protocol_hash"] for r in segs
              if r["metric"] == "KID-proxy" and r["segment_start"] == "20"}
    assert len({h for v, h in hashes.items() if v != "real_floor"}) == 1 and hashes["real_floor"] != hashes["good"]
    streams = list(csv.DictReader((out / "streams.csv").open()))
    assert tuple(streams[0]) == STREAM_COLUMNS
    mine = [float(r["value"]) for r in streams if r["variant"] == "good" and r["metric"] == "PSNR"
            and r["segment_start"] == "20"]
    assert len(mine) == 4 and np.mean(mine) == pytest.approx(m["variants"]["good"]["segments"]["PSNR"][1]["mean"])
    diffs = list(csv.DictReader((out / "differences.csv").open()))
    assert tuple(diffs[0]) == DIFFERENCE_COLUMNS
    d = next(r for r in diffs if (r["a"], r["b"], r["range"], r["metric"]) == ("good", "noisy", "overall", "PSNR"))
    assert float(d["ci_low"]) > 0 and d["better"] == "higher"


def test_second_run_reuses_the_real_features(data, run, tmp_path, capsys):
    m, out = run
    cfg = config_mod.validate({"evaluate": SMALL})["evaluate"]
    again = evaluate(data / "rollouts", data / "gt", out, cfg, reconstructions_dir=data / "recon", progress=False)
    assert "recomputing" not in capsys.readouterr().out
    assert again["real_statistics"]["fid"] == m["real_statistics"]["fid"]
    assert again["variants"]["good"]["overall"] == m["variants"]["good"]["overall"]
    assert again["one_step"] == {} and any("one_step empty" in n for n in again["notes"])


def test_parallel_scoring_gives_the_one_thread_numbers(data, run, tmp_path):
    """Two torch threads score videos on two workers; every number must equal the one-thread run's."""
    m, _ = run
    cfg = config_mod.validate({"evaluate": SMALL})["evaluate"]
    n = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        two = evaluate(data / "rollouts", data / "gt", tmp_path / "out", cfg, reconstructions_dir=data / "recon",
                       one_step_dir=data / "one_step", progress=False)
    finally:
        torch.set_num_threads(n)
    for key in ("variants", "one_step", "claims", "collapse", "real_statistics"):
        assert two[key] == m[key], key


def test_max_frames_and_scenes_select_what_is_scored(data, tmp_path):
    cfg = config_mod.validate({"evaluate": {**SMALL, "max_frames": 40, "scenes": ["scene-0001"],
                                            "claims": []}})["evaluate"]
    m = evaluate(data / "rollouts", data / "gt", tmp_path / "out", cfg, progress=False)
    assert m["streams"] == [{"scene": "scene-0001", "seed": 0}, {"scene": "scene-0001", "seed": 1}]
    assert m["segments"] == [[0, 20], [20, 40]] and m["horizon"] == 40
    assert m["variants"]["good"]["scored_frames"] == [40, 40]
    assert m["variants"]["good"]["overall"]["PSNR"]["n_streams"] == 2


class _TinyInception(torch.nn.Module):
    def forward(self, x: torch.Tensor, return_features: bool = True) -> torch.Tensor:
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)


def test_torchscript_detector_names_fid_and_kid(data, tmp_path):
    path = tmp_path / "inception-tiny.pt"
    torch.jit.script(_TinyInception()).save(str(path))
    sha = file_sha256(path)
    cfg = config_mod.validate({"evaluate": {**SMALL, "inception_path": str(path), "inception_sha256": sha,
                                            "inception_input_size": [16, 24], "claims": []}})["evaluate"]
    m = evaluate(data / "rollouts", data / "gt", tmp_path / "out", cfg, progress=False)
    assert m["families"] == {"fid": "FID", "fvd": "FVD-proxy", "kid": "KID"}
    good = m["variants"]["good"]
    assert good["names"]["KID"].startswith(f"KID[inception-tiny@{sha[:8]}, 16x24 crop, 1 f, ")
    assert "FVD-proxy" in good["overall"] and "KID-proxy" not in good["overall"]
    assert "ceiling" not in m["variants"] and m["collapse"]["calibration"]["source"].startswith("real_floor")


def test_inception_weights_need_torch_fidelity(tmp_path):
    import importlib.util

    from stage.errors import StageError
    from stage.evaluate.backbones import load_backbones
    weights = tmp_path / "pt_inception.pth"
    weights.write_bytes(b"not weights")
    cfg = config_mod.validate({"evaluate": {"inception_weights_path": str(weights)}})["evaluate"]
    # without torch-fidelity: a line naming the package; with it: a line naming the bad weights file
    expected = "pt_inception.pth" if importlib.util.find_spec("torch_fidelity") else "torch-fidelity"
    with pytest.raises(StageError, match=expected):
        load_backbones(cfg)
    with pytest.raises(StageError, match="both set"):
        load_backbones({**cfg, "inception_path": str(weights)})


def test_gates_tell_a_working_variant_from_a_broken_one(run):
    m, _ = run
    g = {(e["variant"], e["gate"]): e for e in m["gates"]}
    assert {v for v, _ in g} == {"good", "noisy", "degrading"} and len(g) == 3 * 4
    assert all(g[("good", gate)]["met"] for gate in GATES)
    assert g[("good", "one_step_psnr")]["value"] < 0          # sharper than the previous real frame
    assert g[("noisy", "beats_still_photograph")]["value"] == 3 and g[("noisy", "no_collapse")]["value"] == 4
    assert g[("degrading", "beats_still_photograph")]["met"] and not g[("degrading", "no_collapse")]["met"]
    assert "4 drift past a ratio of 1.5" in g[("degrading", "no_collapse")]["detail"]
    assert g[("noisy", "one_step_psnr")]["met"] is None        # it has no one-step run
