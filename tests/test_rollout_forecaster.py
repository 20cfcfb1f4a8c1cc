"""Layout forecasters: the ego stays on a lane, agents keep their velocity, boxes move with the ego."""

import numpy as np
import pytest

from stage import config
from stage.data.extract import extract
from stage.errors import StageError
from stage.formats.scene import open_split
from stage.rollout.forecaster import ForecastContext, build_forecaster


@pytest.fixture(scope="module")
def scene(synth_world_small, tmp_path_factory):
    cfg = config.validate({"extract": {"height": 32, "width": 64, "max_scenes": 1}})
    out = tmp_path_factory.mktemp("fc") / "long"
    extract(synth_world_small, "v1.0-stage-synth", "long", out, cfg["extract"])
    return open_split(out)[0], synth_world_small, cfg


def make(scene, name="lane_follow", n_frames=200):
    s, root, cfg = scene
    gt = len(s)
    return build_forecaster(name, ForecastContext(s, gt, n_frames, root, cfg["rollout"].get(name, {}), cfg["extract"],
                                                  cfg["conditions"]["max_boxes"], True))


@pytest.fixture(scope="module")
def lane(scene):
    return make(scene)


def test_forecast_ego_stays_on_a_lane_and_keeps_its_speed(lane):
    m, fps = lane.map, lane.fps
    blend = int(np.ceil(lane.blend_frames))
    poses = np.array([lane.ego_pose(t) for t in range(lane.last + blend, lane.last + blend + 150)])
    assert lane.speed > 1.0  # the recorded ego was driving
    step = np.hypot(*np.diff(poses[:, :2], axis=0).T)
    np.testing.assert_allclose(step, lane.speed / fps, rtol=0.02)  # constant speed along the path
    for x, y, yaw in poses[::10]:
        recs = m.get_records_in_radius(x, y, 3.0, ["lane", "lane_connector"])
        toks = recs["lane"] + recs["lane_connector"]
        pts = np.concatenate([np.asarray(m.discretize_lanes([t], 0.25)[t]) for t in toks])
        d = np.hypot(pts[:, 0] - x, pts[:, 1] - y)
        assert d.min() < 0.3  # on a lane centreline
        assert abs((pts[d.argmin(), 2] - yaw + np.pi) % (2 * np.pi) - np.pi) < 0.2  # pointing along it
    start = lane.ego_pose(lane.last)
    np.testing.assert_allclose(start, lane.ego0, atol=1e-9)  # continuous with the last recorded pose


def test_agents_keep_their_global_velocity(lane, scene):
    assert lane.agents
    table = scene[0].box_table()
    fps = lane.fps
    for a in lane.agents:
        rows = table[table["instance_token"] == a["instance"]].set_index("frame_index")
        if lane.last - 1 in rows.index:  # the recorded velocity, one frame back
            rec = (rows.loc[lane.last, ["x", "y"]].to_numpy(float) - rows.loc[lane.last - 1, ["x", "y"]].to_numpy(float)) * fps
            np.testing.assert_allclose(a["velocity"][:2], rec, atol=0.5)
        p1 = lane.agent_boxes(lane.last + 10)[a["instance"]]["translation"]
        p2 = lane.agent_boxes(lane.last + 70)[a["instance"]]["translation"]
        np.testing.assert_allclose((p2 - p1) * fps / 60, a["velocity"], atol=1e-9)


def test_a_static_agent_moves_in_the_image_as_the_ego_advances(scene):
    f = make(scene)
    t0 = f.last + 20
    x, y, yaw = f.ego_pose(t0)
    ahead = np.array([x + 20 * np.cos(yaw) - 1.5 * np.sin(yaw), y + 20 * np.sin(yaw) + 1.5 * np.cos(yaw), 0.8])
    f.agents = [{"instance": "parked", "category": "vehicle.car", "xyz": ahead, "velocity": np.zeros(3),
                 "size": np.array([1.8, 4.5, 1.6]), "rotation": [np.cos(yaw / 2), 0, 0, np.sin(yaw / 2)]}]
    a, b = f.layout(t0), f.layout(t0 + 12)  # one second later
    assert a.box_mask[0] and b.box_mask[0] and a.box_mask.sum() == 1
    travelled = f.speed  # metres in one second
    # depth (box feature 3) shrinks by the distance driven; the box grows and drifts left of centre
    assert a.box_features[0, 3] - b.box_features[0, 3] == pytest.approx(travelled, rel=0.05)
    assert b.box_features[0, 4] > a.box_features[0, 4] and b.box_features[0, 1] < a.box_features[0, 1] < 0.5
    assert a.hdmap.shape == (32, 64, 3) and a.hdmap.any()  # the map is drawn around the forecast ego


def test_hold_last_repeats_the_last_recorded_layout(scene):
    f = make(scene, "hold_last")
    s = scene[0]
    a = f.layout(len(s) + 5)
    assert np.array_equal(a.hdmap, s.hdmap[len(s) - 1])
    assert a.box_mask.sum() == (s.box_table().query(f"frame_index == {len(s) - 1}")["visible"]).sum()


def test_unknown_forecaster_lists_the_registered_ones(scene):
    with pytest.raises(StageError, match="hold_last, lane_follow"):
        make(scene, "mile")
