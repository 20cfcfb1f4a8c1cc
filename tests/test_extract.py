"""Extraction from the synthetic nuScenes-format world with the real nuscenes-devkit: geometry,
interpolation, condition images, the split's completeness, and every bad input the issue lists."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from stage import config as config_mod
from stage.data.extract import extract
from stage.data.layout_drawing import MAP_CLASS_COLOURS
from stage.data.synth import ground_truth
from stage.errors import StageError
from stage.formats.scene import open_split

VERSION = "v1.0-stage-synth"
SIZE = {"height": 64, "width": 112}


def extract_cfg(**over):
    return config_mod.validate({"extract": {**SIZE, **over}})["extract"]


@pytest.fixture(scope="module")
def extracted(synth_world_small, tmp_path_factory):
    out = tmp_path_factory.mktemp("extracted") / "train"
    extract(synth_world_small, VERSION, "train", out, extract_cfg())
    return out


@pytest.fixture(scope="module")
def world_config(synth_world_small):
    summary = json.loads((synth_world_small / VERSION / "synth_summary.json").read_text())
    return config_mod.validate({"synth": summary["synth"]})


def quat_to_matrix(w, x, y, z):
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def expected_pixel(frame_truth, centre, src_wh, out_hw):
    """Project a global point with the generator's own poses, independently of the extraction code."""
    ego = frame_truth["ego_pose"]
    p_ego = ego[:3, :3].T @ (np.asarray(centre) - ego[:3, 3])
    cam = frame_truth["camera"]
    p_cam = quat_to_matrix(*cam["rotation"]).T @ (p_ego - np.asarray(cam["translation"]))
    K = np.asarray(cam["camera_intrinsic"])
    u, v = K[0, 0] * p_cam[0] / p_cam[2] + K[0, 2], K[1, 1] * p_cam[1] / p_cam[2] + K[1, 2]
    (w0, h0), (h, w) = src_wh, out_hw
    scale = max(w / w0, h / h0)
    rw, rh = max(w, round(w0 * scale)), max(h, round(h0 * scale))
    return u * rw / w0 - (rw - w) // 2, v * rh / h0 - (rh - h) // 2, p_cam[2]


def test_frame_counts_equal_the_12hz_chain(synth_world_small, extracted):
    sample_data = json.loads((synth_world_small / VERSION / "sample_data.json").read_text())
    samples = {s["token"]: s for s in json.loads((synth_world_small / VERSION / "sample.json").read_text())}
    scenes = {s["token"]: s["name"] for s in json.loads((synth_world_small / VERSION / "scene.json").read_text())}
    per_scene = {}
    for sd in sample_data:
        if sd["filename"].startswith(("samples/CAM_FRONT/", "sweeps/CAM_FRONT/")):
            name = scenes[samples[sd["sample_token"]]["scene_token"]]
            per_scene[name] = per_scene.get(name, 0) + 1
    scenes_out = open_split(extracted)
    assert [s.name for s in scenes_out] == json.loads((synth_world_small / VERSION / "splits.json").read_text())["train"]
    for scene in scenes_out:
        assert len(scene) == per_scene[scene.name] == scene.frames.shape[0] == len(scene.frame_table())
        assert scene.hdmap.shape == scene.boxmap.shape == scene.frames.shape == (len(scene), 64, 112, 3)
        stamps = scene.frame_table()["timestamp_us"].to_numpy()
        assert (np.diff(stamps) > 0).all()
        assert scene.frame_table()["is_key_frame"].sum() == len(scene) // 6 + 1


def test_boxes_project_where_the_generator_put_them(extracted, world_config):
    checked = 0
    for scene in open_split(extracted):
        truth = ground_truth(world_config, scene.name)
        boxes = scene.box_table()
        src_wh = tuple(scene.meta["source_size_wh"])
        for row in boxes[~boxes["interpolated"] & boxes["visible"]].itertuples():
            agent = next(a for a in truth[row.frame_index]["agents"] if a["instance_token"] == row.instance_token)
            u, v, depth = expected_pixel(truth[row.frame_index], agent["translation"], src_wh, (64, 112))
            assert abs(row.u - u) < 0.05 and abs(row.v - v) < 0.05, (row.u, row.v, u, v)
            assert abs(row.depth - depth) < 1e-3
            checked += 1
    assert checked >= 5


def test_interpolated_boxes_lie_between_their_keyframes(extracted, world_config):
    checked = 0
    for scene in open_split(extracted):
        boxes = scene.box_table().set_index(["frame_index", "instance_token"])
        truth = ground_truth(world_config, scene.name)
        for k0 in range(0, len(scene) - 6, 6):
            k1 = k0 + 6
            for inst in set(boxes.loc[k0].index) & set(boxes.loc[k1].index):
                a = boxes.loc[(k0, inst), ["x", "y"]].to_numpy(float)
                b = boxes.loc[(k1, inst), ["x", "y"]].to_numpy(float)
                for f in range(k0 + 1, k1):
                    row = boxes.loc[(f, inst)]
                    assert bool(row["interpolated"])
                    p = row[["x", "y"]].to_numpy(float)
                    alpha = (f - k0) / 6
                    assert np.allclose(p, a + alpha * (b - a), atol=1e-6)  # on the chord, at its time
                    true_xy = next(x["translation"][:2] for x in truth[f]["agents"] if x["instance_token"] == inst)
                    assert np.linalg.norm(p - np.asarray(true_xy)) < 0.5  # and close to where the agent was
                    checked += 1
    assert checked >= 20


def _near(mask, radius=1):
    out = mask.copy()
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            out |= np.roll(np.roll(mask, dy, 0), dx, 1)
    return out


def test_map_lines_land_on_the_rendered_road(extracted):
    """Centre lines (road_divider) fall on the yellow paint of the image, and not 8 pixels beside it.

    Only the bottom quarter (the road within ~10 m): towards the horizon the paint is narrower than a pixel."""
    assert MAP_CLASS_COLOURS["road_divider"] == (255, 220, 0)
    hits, shifted_hits, total = 0, 0, 0
    for scene in open_split(extracted):
        for t in range(0, len(scene), 5):
            frame = np.asarray(scene.frames[t]).astype(int)
            hd = np.asarray(scene.hdmap[t])
            yellow = (frame[..., 0] > 120) & (frame[..., 0] - frame[..., 2] > 60)
            r, g, b = (hd[..., i].astype(int) for i in range(3))
            line = (r > 100) & (b < 40) & (g > 0.6 * r)  # the road_divider hue, at any anti-aliasing weight
            line[: 3 * line.shape[0] // 4] = False
            near_yellow = _near(yellow)
            hits += (line & near_yellow).sum()
            shifted_hits += (np.roll(line, 8, axis=1) & near_yellow).sum()
            total += line.sum()
    assert total > 100
    assert hits / total > 0.8
    assert shifted_hits / total < 0.3


def test_box_layout_image_marks_visible_boxes(extracted):
    for scene in open_split(extracted):
        boxes = scene.box_table()
        for t in range(len(scene)):
            drawn = np.asarray(scene.boxmap[t]).any(axis=-1).any()
            in_view = boxes[(boxes.frame_index == t) & boxes.visible]
            assert drawn == (len(in_view) > 0)


def test_incomplete_output_is_never_complete_looking(synth_world_small, tmp_path):
    root = tmp_path / "world"
    shutil.copytree(synth_world_small, root)
    sample_data = json.loads((root / VERSION / "sample_data.json").read_text())
    scenes = json.loads((root / VERSION / "splits.json").read_text())["train"]
    samples = {s["token"]: s for s in json.loads((root / VERSION / "sample.json").read_text())}
    scene_tok = {s["name"]: s["token"] for s in json.loads((root / VERSION / "scene.json").read_text())}
    victim = next(sd for sd in sample_data if sd["filename"].startswith("sweeps/CAM_FRONT")
                  and samples[sd["sample_token"]]["scene_token"] == scene_tok[scenes[-1]])
    (root / victim["filename"]).unlink()
    out = tmp_path / "out"
    with pytest.raises(StageError, match=victim["filename"].split("/")[-1]):
        extract(root, VERSION, "train", out, extract_cfg())
    assert not (out / "index.json").exists()
    assert not (out / scenes[-1]).exists()
    assert not [p for p in out.iterdir() if ".tmp" in p.name]
    with pytest.raises(StageError, match="index.json"):
        open_split(out)


@pytest.fixture
def world_copy(synth_world_small, tmp_path):
    root = tmp_path / "world"
    shutil.copytree(synth_world_small, root)
    return root


def test_missing_dataroot(tmp_path):
    with pytest.raises(StageError, match="does not exist.*--dataroot"):
        extract(tmp_path / "nope", VERSION, "train", tmp_path / "out", extract_cfg())


def test_unknown_version(synth_world_small, tmp_path):
    with pytest.raises(StageError, match=f"unknown version 'v9'.*{VERSION}"):
        extract(synth_world_small, "v9", "train", tmp_path / "out", extract_cfg())


def test_missing_table(world_copy, tmp_path):
    (world_copy / VERSION / "sample_annotation.json").unlink()
    with pytest.raises(StageError, match="sample_annotation.json is missing"):
        extract(world_copy, VERSION, "train", tmp_path / "out", extract_cfg())


def test_missing_map_expansion(world_copy, tmp_path):
    for p in (world_copy / "maps" / "expansion").glob("*.json"):
        p.unlink()
    with pytest.raises(StageError, match="map expansion .* is missing"):
        extract(world_copy, VERSION, "train", tmp_path / "out", extract_cfg())
    assert not (tmp_path / "out").exists()  # checked before any work


def test_scene_without_cam_front(world_copy, tmp_path):
    table = world_copy / VERSION / "sample_data.json"
    sample_data = json.loads(table.read_text())
    samples = {s["token"]: s for s in json.loads((world_copy / VERSION / "sample.json").read_text())}
    first_scene = json.loads((world_copy / VERSION / "scene.json").read_text())[0]
    kept = [sd for sd in sample_data if not ("CAM_FRONT" in sd["filename"]
                                             and samples[sd["sample_token"]]["scene_token"] == first_scene["token"])]
    assert len(kept) < len(sample_data)
    table.write_text(json.dumps(kept))
    with pytest.raises(StageError, match=f"scene {first_scene['name']} has no CAM_FRONT data.*LIDAR_TOP"):
        extract(world_copy, VERSION, "train", tmp_path / "out", extract_cfg())


def test_resolution_out_of_range(synth_world_small, tmp_path):
    with pytest.raises(StageError, match="extract.height"):
        config_mod.validate({"extract": {"height": 100}})  # not a multiple of 8
    with pytest.raises(StageError, match="larger than the source images"):
        extract(synth_world_small, VERSION, "train", tmp_path / "out", extract_cfg(height=512, width=896))


def test_unknown_split(synth_world_small, tmp_path):
    with pytest.raises(StageError, match="split 'val' not found.*long.*train"):
        extract(synth_world_small, VERSION, "val", tmp_path / "out", extract_cfg())


def test_official_split_must_match_version():
    from stage.data.nuscenes_source import split_scene_names

    assert len(split_scene_names("/nowhere", "v1.0-mini", "mini_val")) == 2
    with pytest.raises(StageError, match="not a split of v1.0-mini"):
        split_scene_names("/nowhere", "v1.0-mini", "train")


def test_cli_reports_bad_input_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "stage", "extract", "--dataroot", str(tmp_path / "missing"),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "stage extract: error: dataroot" in proc.stderr


def test_contact_sheet_overlays_layouts_on_frames(extracted, tmp_path):
    from PIL import Image

    from stage.data.contact_sheet import contact_sheet, overlay

    scene = open_split(extracted)[0]
    t = len(scene) // 2
    frame, hd, bx = (np.asarray(a[t]) for a in (scene.frames, scene.hdmap, scene.boxmap))
    out = overlay(frame, hd, bx)
    drawn_box, drawn_map = bx.any(-1), hd.any(-1) & ~bx.any(-1)
    assert drawn_map.any() and drawn_box.any()
    assert (out[drawn_box] == bx[drawn_box]).all() and (out[drawn_map] == hd[drawn_map]).all()
    untouched = ~(hd.any(-1) | bx.any(-1))
    assert (out[untouched] == frame[untouched]).all()
    png = contact_sheet(extracted, tmp_path / "sheet.png", n_scenes=2, n_frames=4)
    with Image.open(png) as img:
        rgb = np.asarray(img.convert("RGB"))
    assert rgb.shape[0] > 300 and rgb.shape[1] > 400
    assert rgb.std() > 20  # pictures, not a blank canvas


def test_visible_boxes_have_a_finite_extent_and_features(extracted):
    """Boxes cut by the near plane have NaN corners; their clipped extent and the token features stay finite."""
    from stage.latents.box_tokens import box_features

    for scene in open_split(extracted):
        boxes = scene.box_table()
        vis = boxes[boxes.visible]
        bbox = vis[["bbox_u0", "bbox_v0", "bbox_u1", "bbox_v1"]].to_numpy()
        assert np.isfinite(bbox).all()
        assert (bbox[:, 2] >= bbox[:, 0]).all() and (bbox[:, 3] >= bbox[:, 1]).all()
        assert boxes[~boxes.visible][["bbox_u0"]].isna().all().all()
        feats, mask = box_features(boxes, len(scene), (64, 112), max_boxes=70)
        assert np.isfinite(feats).all() and mask.sum() == len(vis)


def test_box_crossing_the_camera_plane():
    """A long truck alongside the ego: its rear corners are behind the camera, its front in view."""
    import pandas as pd

    from stage.data.extract import box_rows
    from stage.latents.box_tokens import box_features

    K = np.array([[100.0, 0, 56], [0, 100.0, 32], [0, 0, 1]])
    # identity global->camera: box centre 3 m ahead, 2.5 m to the right, 10 m long along the optical axis;
    # in the camera frame the box's length runs along z, so rotate its x axis onto z (yaw about y)
    rot = [np.cos(-np.pi / 4), 0.0, np.sin(-np.pi / 4), 0.0]
    boxes = {"truck": {"translation": [2.5, 0.0, 3.0], "size": [2.5, 10.0, 3.0], "rotation": rot,
                       "category": "vehicle.truck"}}
    rows, corners, _ = box_rows(0, boxes, False, np.eye(4), K, (64, 112), 0.5)
    row = rows[0]
    assert any(np.isnan(row[f"corner{i}_u"]) for i in range(8))  # some corners have no projection
    assert row["visible"] and all(np.isfinite(row[k]) for k in ("bbox_u0", "bbox_v0", "bbox_u1", "bbox_v1"))
    assert row["bbox_u1"] > 112  # the clipped extent runs off the right edge, towards the camera plane
    feats, mask = box_features(pd.DataFrame(rows), 1, (64, 112), max_boxes=70)
    assert mask[0, 0] and np.isfinite(feats).all() and feats[0, 0, 4] > 0.3
