"""The synthetic world loads in the nuScenes devkit and its images show what its tables say."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pyquaternion import Quaternion

from conftest import SYNTH_SMALL_CONFIG
from stage import config as config_mod
from stage.data.synth import World, generate, ground_truth, scene_boxes
from stage.data.synth.render import Renderer
from stage.data.synth.world import frame_count
from stage.errors import StageError

VERSION = "v1.0-stage-synth"
MAP = "singapore-onenorth"
SYNTH = config_mod.validate(SYNTH_SMALL_CONFIG)["synth"]


@pytest.fixture(scope="module")
def nusc(synth_world_small):
    from nuscenes.nuscenes import NuScenes
    return NuScenes(version=VERSION, dataroot=str(synth_world_small), verbose=False)


@pytest.fixture(scope="module")
def nusc_map(synth_world_small):
    from nuscenes.map_expansion.map_api import NuScenesMap
    return NuScenesMap(dataroot=str(synth_world_small), map_name=MAP)


def _cam_chain(nusc, scene):
    sample = nusc.get("sample", scene["first_sample_token"])
    sd = nusc.get("sample_data", sample["data"]["CAM_FRONT"])
    chain = [sd]
    while sd["next"]:
        sd = nusc.get("sample_data", sd["next"])
        chain.append(sd)
    return chain


def _project(nusc, sd, points_global):
    """Global (N, 3) points to pixel (N, 2) and depth (N,) in a CAM_FRONT sample_data's image."""
    pose = nusc.get("ego_pose", sd["ego_pose_token"])
    cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
    p = (np.asarray(points_global, float) - pose["translation"]) @ Quaternion(pose["rotation"]).rotation_matrix
    p = (p - cs["translation"]) @ Quaternion(cs["rotation"]).rotation_matrix
    K = np.array(cs["camera_intrinsic"])
    z = p[:, 2]
    uv = np.stack([p[:, 0] / z * K[0, 0] + K[0, 2], p[:, 1] / z * K[1, 1] + K[1, 2]], -1)
    return uv, z


def test_devkit_loads_world_with_expected_chains(nusc, synth_world_small):
    splits = json.loads((synth_world_small / VERSION / "splits.json").read_text())
    assert splits == {"train": ["synth-0000", "synth-0001"], "long": ["synth-0002"]}
    assert len(nusc.scene) == 3
    for scene in nusc.scene:
        seconds = SYNTH["long_scene_seconds"] if scene["name"] in splits["long"] else SYNTH["train_scene_seconds"]
        chain = _cam_chain(nusc, scene)
        assert len(chain) == frame_count(seconds, 12.0, 6)
        assert [sd["is_key_frame"] for sd in chain] == [i % 6 == 0 for i in range(len(chain))]
        assert chain[0]["is_key_frame"] and chain[-1]["is_key_frame"] and chain[0]["prev"] == ""
        # Sweeps belong to the next keyframe's sample, as in nuScenes.
        keys = [sd["sample_token"] for sd in chain if sd["is_key_frame"]]
        assert all(sd["sample_token"] == keys[-(-i // 6)] for i, sd in enumerate(chain))
        assert scene["nbr_samples"] == len(keys)
        assert all((synth_world_small / sd["filename"]).is_file() for sd in chain)
        assert chain[0]["filename"].startswith("samples/CAM_FRONT/") and chain[1]["filename"].startswith("sweeps/")
        if scene["name"] in splits["long"]:
            assert (chain[-1]["timestamp"] - chain[0]["timestamp"]) / 1e6 >= seconds


def test_each_sample_has_one_cam_front_keyframe_and_a_lidar(nusc):
    per_sample = {}
    for sd in nusc.sample_data:
        if sd["is_key_frame"]:
            per_sample.setdefault(sd["sample_token"], []).append(sd["channel"])
    assert len(per_sample) == len(nusc.sample)
    for channels in per_sample.values():
        assert sorted(channels) == ["CAM_FRONT", "LIDAR_TOP"]
    ann = nusc.sample_annotation
    assert ann and all(a["num_lidar_pts"] > 0 and a["num_radar_pts"] > 0 for a in ann)
    assert {a["category_name"] for a in ann} <= {c["name"] for c in nusc.category}
    for inst in nusc.instance:
        n, tok = 1, inst["first_annotation_token"]
        while nusc.get("sample_annotation", tok)["next"]:
            tok, n = nusc.get("sample_annotation", tok)["next"], n + 1
        assert tok == inst["last_annotation_token"] and n == inst["nbr_annotations"]


def test_map_loads_and_answers_queries(nusc, nusc_map):
    x, y, _ = nusc.ego_pose[0]["translation"]
    recs = nusc_map.get_records_in_patch((x - 40, y - 40, x + 40, y + 40))
    for layer in ("drivable_area", "road_segment", "lane", "ped_crossing", "lane_divider", "road_divider"):
        assert recs[layer], layer
    assert nusc_map.layers_on_point(x, y)["road_segment"]          # the ego drives on the road
    lane = nusc_map.get_closest_lane(x, y, radius=3)
    poses = nusc_map.discretize_lanes([lane], 1.0)[lane]
    assert len(poses) > 10 and min(np.hypot(px - x, py - y) for px, py, _ in poses) < 0.5
    nxt = nusc_map.get_outgoing_lane_ids(lane)
    assert nxt and all(nusc_map.get_arcline_path(t) for t in nxt)
    line = nusc_map.extract_line(nusc_map.get("lane_divider", recs["lane_divider"][0])["line_token"])
    assert line.length > 10
    assert nusc_map.extract_polygon(nusc_map.get("lane", recs["lane"][0])["polygon_token"]).area > 10


def test_same_seed_is_byte_identical_with_any_rendering_processes_and_other_seed_differs(tmp_path):
    cfg = {"synth": {"seed": 3, "n_train_scenes": 2, "train_scene_seconds": 1.0, "n_long_scenes": 0,
                     "image_width": 96, "image_height": 54}}
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    b.mkdir()
    (b / "stale").write_text("old run")                    # replaced as a whole, only at the end
    generate(cfg, a)
    generate(cfg, b, workers=2)  # each scene's frames a task of its own process
    generate({"synth": {**cfg["synth"], "seed": 4}}, c)
    assert not (b / "stale").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c"]

    def files(root):
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    fa, fb, fc = files(a), files(b), files(c)
    assert fa == fb
    jpgs = [k for k in fa if k.endswith(".jpg")]
    assert jpgs and any(fa[k] != fc.get(k) for k in jpgs)
    assert fa[f"{VERSION}/sample_annotation.json"] != fc[f"{VERSION}/sample_annotation.json"]


def test_boxes_are_drawn_where_tables_and_ground_truth_put_them(nusc, synth_world_small):
    world = World(SYNTH)
    renderer = Renderer(world.net, world.camera, world.texture_seed)
    checked, differing = 0, 0
    for scene in nusc.scene:
        truth = ground_truth(SYNTH_SMALL_CONFIG, scene["name"])
        motion, weather = world.scene(world.plan(scene["name"]))
        for frame, sd in enumerate(_cam_chain(nusc, scene)):
            if not sd["is_key_frame"]:
                continue
            gt = {a["instance_token"]: a for a in truth[frame]["agents"]}
            assert np.allclose(truth[frame]["ego_pose"][:3, 3], nusc.get("ego_pose", sd["ego_pose_token"])["translation"])
            image = np.asarray(Image.open(synth_world_small / sd["filename"]), dtype=np.int16)
            empty = renderer.render(motion.ego[frame], *scene_boxes(world, motion, frame, with_agents=False),
                                    weather).astype(np.int16)
            for ann_token in nusc.get("sample", sd["sample_token"])["anns"]:
                ann = nusc.get("sample_annotation", ann_token)
                assert np.allclose(ann["translation"], gt[ann["instance_token"]]["translation"])
                uv, z = _project(nusc, sd, [ann["translation"]])
                u, v = np.round(uv[0]).astype(int)
                if not (ann["visibility_token"] == "4" and 3.0 < z[0] < 40.0):
                    continue
                checked += 1
                patch = (slice(max(v - 1, 0), v + 2), slice(max(u - 1, 0), u + 2))
                if np.abs(image[patch] - empty[patch]).mean() > 20:
                    differing += 1
    assert checked >= 3
    assert differing / checked >= 0.9


def test_lane_dividers_land_on_white_paint(nusc, nusc_map, synth_world_small):
    world = World(SYNTH)
    hits, total = 0, 0
    for sample in nusc.sample:
        sd = nusc.get("sample_data", sample["data"]["CAM_FRONT"])
        x, y, _ = nusc.get("ego_pose", sd["ego_pose_token"])["translation"]
        image = np.asarray(Image.open(synth_world_small / sd["filename"]).convert("L"), dtype=float)
        H, W = image.shape
        for tok in nusc_map.get_records_in_patch((x - 30, y - 30, x + 30, y + 30), ["lane_divider"])["lane_divider"]:
            line = list(nusc_map.extract_line(nusc_map.get("lane_divider", tok)["line_token"]).coords)
            centres = world.net.dash_centres(line)
            pts = np.column_stack([centres, np.zeros(len(centres))])
            # Asphalt 1 m to the side of each dash, for contrast.
            d = np.subtract(line[-1], line[0]) / np.linalg.norm(np.subtract(line[-1], line[0]))
            side = pts + np.array([-d[1], d[0], 0.0])
            uv, z = _project(nusc, sd, pts)
            uv_side, z_side = _project(nusc, sd, side)
            for (u, v), depth, (us, vs) in zip(uv, z, uv_side):
                if 4.0 < depth < 18.0 and 0 <= u < W and 0 <= v < H and 0 <= us < W and 0 <= vs < H:
                    total += 1
                    hits += image[int(v), int(u)] > image[int(vs), int(us)] + 25
    assert total >= 10
    assert hits / total >= 0.75


def test_bad_config_names_the_field(tmp_path):
    with pytest.raises(StageError, match="synth.image_height"):
        generate({"synth": {"image_width": 400, "image_height": 80}}, tmp_path / "w")
    with pytest.raises(StageError, match="synth.image_width"):
        generate({"synth": {"image_width": 32}}, tmp_path / "w")
    with pytest.raises(StageError, match="synth.camera_fps"):
        generate({"synth": {"camera_fps": 0}}, tmp_path / "w")
    assert not any(Path(tmp_path).iterdir())
