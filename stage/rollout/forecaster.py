"""Layout forecasters: the layout of frame T past the end of a scene's recorded layouts.

STAGE's dev code predicts future BEV layouts with a separate model (MILE) [dev]; any forecaster that
produces the next layout may stand in [paper figure "infinite generation"]. A forecaster here is a small
class registered by name (config `rollout.forecaster`, its parameters in `rollout.<name>`):

    @register_forecaster
    class MyForecaster(LayoutForecaster):
        name = "mine"
        def layout(self, frame_index: int) -> Layout: ...

`layout(t)` must be a pure function of the context and t: a resumed rollout rebuilds the forecaster and
asks again for the frames it still needs, and must get the same layouts.

- `lane_follow` (default) [ours]: the ego drives on along the map's lanes (closest lane in its heading,
  then the straightest outgoing lane at each lane end) at its last recorded speed; agents keep their last
  recorded global velocity and heading (and leave the view); map polylines around the forecast pose are
  drawn with the extraction's draw_hdmap, boxes projected with the scene's intrinsic by the extraction's
  own projection and turned into box features by the cache's builder. No new agents appear.
- `hold_last` [ours]: the last recorded layout, frozen (no map needed; a baseline).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from pyquaternion import Quaternion

from stage.errors import StageError
from stage.formats.scene import BOX_COLUMNS, ExtractedScene
from stage.latents.box_tokens import box_features


@dataclass
class ForecastContext:
    """What a forecaster may read: the extracted scene, up to its last ground-truth frame."""

    scene: ExtractedScene
    gt_frames: int                 # frames 0 .. gt_frames-1 have recorded layouts
    n_frames: int                  # rollout length (the forecaster covers gt_frames .. n_frames-1)
    dataroot: Path | None          # nuScenes-format root (maps/expansion/<location>.json)
    params: dict                   # this forecaster's config section, rollout.<name>
    extract_cfg: dict              # the drawing settings of the extraction (near_plane_m, line_width)
    max_boxes: int = 70
    visible_only: bool = True


@dataclass
class Layout:
    """One frame's layout: the HD-map image, box features (as the cache holds them) and the ego pose."""

    hdmap: np.ndarray                              # uint8 (H, W, 3)
    box_features: np.ndarray                       # float32 (max_boxes, F)
    box_mask: np.ndarray                           # bool (max_boxes,)
    ego: np.ndarray | None = None                  # (x, y, yaw) global, when the forecaster moves the ego
    boxes: pd.DataFrame = field(default_factory=pd.DataFrame)   # boxes.parquet-style rows of the frame


class LayoutForecaster(ABC):
    name: str = ""

    def __init__(self, context: ForecastContext):
        self.context = context

    @abstractmethod
    def layout(self, frame_index: int) -> Layout:
        """The layout of frame `frame_index` (>= context.gt_frames)."""


FORECASTERS: dict[str, type[LayoutForecaster]] = {}


def register_forecaster(cls: type[LayoutForecaster]) -> type[LayoutForecaster]:
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a `name`")
    FORECASTERS[cls.name] = cls
    return cls


def build_forecaster(name: str, context: ForecastContext) -> LayoutForecaster:
    if name not in FORECASTERS:
        raise StageError(f"unknown layout forecaster {name!r} (rollout.forecaster); registered: "
                         f"{', '.join(sorted(FORECASTERS))}")
    return FORECASTERS[name](context)


def _wrap(a):
    return (np.asarray(a) + np.pi) % (2 * np.pi) - np.pi


def _yaw_quaternion(yaw: float) -> Quaternion:
    return Quaternion(axis=[0.0, 0.0, 1.0], angle=float(yaw))


def project_boxes(boxes: dict[str, dict], global_to_cam: np.ndarray, K: np.ndarray, hw, near: float,
                  max_boxes: int, visible_only: bool):
    """Global boxes {instance: {translation, size, rotation, category}} -> (rows, corners_cam, category ids,
    features (max_boxes, F), mask (max_boxes,)), by the extraction's projection and the cache's builder."""
    from stage.data.extract import box_rows  # the exact projection `stage extract` wrote boxes.parquet with

    rows, corners, cat_ids = box_rows(0, boxes, True, global_to_cam, K, hw, near)
    table = pd.DataFrame(rows, columns=list(BOX_COLUMNS))
    feats, mask = box_features(table, 1, hw, max_boxes, visible_only)
    return table, corners, cat_ids, feats[0], mask[0]


@register_forecaster
class HoldLastForecaster(LayoutForecaster):
    """The last recorded layout, frozen: HD map image and boxes of frame gt_frames - 1."""

    name = "hold_last"

    def __init__(self, context: ForecastContext):
        super().__init__(context)
        last = context.gt_frames - 1
        scene = context.scene
        hw = scene.frames.shape[1:3]
        self.hdmap = np.asarray(scene.hdmap[last]).copy()
        table = scene.box_table()
        table = table[table["frame_index"] == last].assign(frame_index=0)
        self.feats, self.mask = box_features(table, 1, hw, context.max_boxes, context.visible_only)
        self.boxes = table

    def layout(self, frame_index: int) -> Layout:
        return Layout(self.hdmap, self.feats[0], self.mask[0], None, self.boxes)


class LanePath:
    """A drivable centreline from a pose onward: the closest lane pointing the ego's way, then at each lane
    end the straightest outgoing lane (end heading closest to the current heading; ties: token order)."""

    def __init__(self, nusc_map, x: float, y: float, yaw: float, resolution: float, search_radius: float):
        self.map, self.resolution = nusc_map, resolution
        self.lane = self._start_lane(x, y, yaw, search_radius)
        if self.lane is None:  # off the lane graph: straight ahead
            self.poses = np.array([[x, y, yaw], [x + np.cos(yaw), y + np.sin(yaw), yaw]])
        else:
            pts = self._poses(self.lane)
            i = int(np.argmin(np.hypot(pts[:, 0] - x, pts[:, 1] - y)))
            self.poses = pts[i:] if len(pts) - i >= 2 else pts[-2:]
        self.ended = self.lane is None
        self._update()

    def _poses(self, lane: str) -> np.ndarray:
        return np.asarray(self.map.discretize_lanes([lane], self.resolution)[lane], dtype=np.float64)

    def _start_lane(self, x, y, yaw, radius) -> str | None:
        recs = self.map.get_records_in_radius(x, y, radius, ["lane", "lane_connector"])
        best, best_d = None, np.inf
        for tok in sorted(recs["lane"] + recs["lane_connector"]):
            pts = self._poses(tok)
            if len(pts) < 2:
                continue
            d = np.hypot(pts[:, 0] - x, pts[:, 1] - y)
            i = int(np.argmin(d))
            if abs(_wrap(pts[i, 2] - yaw)) < np.pi / 2 and d[i] < best_d:  # same direction of travel only
                best, best_d = tok, d[i]
        return best

    def _update(self):
        seg = np.hypot(*np.diff(self.poses[:, :2], axis=0).T)
        self.s = np.concatenate([[0.0], np.cumsum(seg)])

    def extend_to(self, length: float) -> None:
        while self.s[-1] < length:
            outs = [] if self.ended else sorted(self.map.get_outgoing_lane_ids(self.lane))
            cands = [(abs(_wrap(p[-1, 2] - self.poses[-1, 2])), tok, p) for tok in outs
                     if len(p := self._poses(tok)) >= 2]
            if not cands:  # dead end of the lane graph: straight on
                self.ended = True
                x, y, yaw = self.poses[-1]
                n = int(np.ceil((length - self.s[-1]) / self.resolution)) + 1
                d = self.resolution * np.arange(1, n + 1)
                straight = np.column_stack([x + d * np.cos(yaw), y + d * np.sin(yaw), np.full(n, yaw)])
                self.poses = np.concatenate([self.poses, straight])
            else:
                _, self.lane, pts = min(cands, key=lambda c: (c[0], c[1]))
                if np.hypot(*(pts[0, :2] - self.poses[-1, :2])) < 1e-6:
                    pts = pts[1:]
                self.poses = np.concatenate([self.poses, pts])
            self._update()

    def at(self, s: float) -> np.ndarray:
        """(x, y, yaw) at arc length s."""
        self.extend_to(s + self.resolution)
        x = np.interp(s, self.s, self.poses[:, 0])
        y = np.interp(s, self.s, self.poses[:, 1])
        yaw = np.interp(s, self.s, np.unwrap(self.poses[:, 2]))
        return np.array([x, y, float(_wrap(yaw))])


@register_forecaster
class LaneFollowForecaster(LayoutForecaster):
    """Ego along the lanes at its last speed; agents at constant global velocity; map drawn around the ego."""

    name = "lane_follow"

    def __init__(self, context: ForecastContext):
        super().__init__(context)
        from stage.data.geometry import pose_matrix
        from stage.data.nuscenes_source import open_map

        p, scene = context.params, context.scene
        meta = scene.meta
        for key in ("intrinsic", "camera_to_ego", "location"):
            if key not in meta:
                raise StageError(f"{scene.meta_path} has no {key!r}: the lane_follow forecaster needs a scene "
                                 "extracted by `stage extract` from a nuScenes-format dataset (set "
                                 "rollout.forecaster: hold_last for scenes without a map)")
        if context.dataroot is None:
            raise StageError("the lane_follow forecaster needs the nuScenes-format root holding maps/: pass --dataroot")
        self.K = np.asarray(meta["intrinsic"], dtype=np.float64)
        self.hw = (int(meta["height"]), int(meta["width"]))
        self.cam_to_ego = pose_matrix(meta["camera_to_ego"]["translation"], meta["camera_to_ego"]["rotation"])
        self.fps = float(meta.get("fps") or 12.0)
        self.radius = float(meta.get("map_radius_m", context.extract_cfg["map_radius_m"]))
        self.near, self.width = context.extract_cfg["near_plane_m"], context.extract_cfg["line_width"]
        self.map = open_map(context.dataroot, meta["location"])
        self.last = last = context.gt_frames - 1
        w = min(int(p["velocity_window"]), last)

        ft = scene.frame_table().set_index("frame_index")
        ego = ft.loc[last]
        self.ego0 = np.array([ego["ego_x"], ego["ego_y"], ego["ego_yaw"]], dtype=np.float64)
        self.ego_z = float(ego["ego_z"])
        prev = ft.loc[last - w]
        self.speed = float(np.hypot(ego["ego_x"] - prev["ego_x"], ego["ego_y"] - prev["ego_y"]) * self.fps / w) if w else 0.0
        self.path = LanePath(self.map, *self.ego0, p["lane_resolution_m"], p["lane_search_radius_m"])
        start = self.path.poses[0]
        self.offset0 = np.array([self.ego0[0] - start[0], self.ego0[1] - start[1], _wrap(self.ego0[2] - start[2])])
        self.blend_frames = max(1.0, p["offset_blend_seconds"] * self.fps)

        bt = scene.box_table()
        bt = bt[(bt["frame_index"] >= last - w) & (bt["frame_index"] <= last)]
        self.agents = []
        for inst, rows in bt.sort_values("frame_index").groupby("instance_token", sort=True):
            end = rows.iloc[-1]
            if int(end["frame_index"]) != last:
                continue  # gone before the last recorded frame
            first = rows.iloc[0]
            dt = (int(end["frame_index"]) - int(first["frame_index"])) / self.fps
            vel = np.array([end["x"] - first["x"], end["y"] - first["y"], 0.0]) / dt if dt > 0 else np.zeros(3)
            self.agents.append({"instance": inst, "category": end["category"],
                                "xyz": end[["x", "y", "z"]].to_numpy(np.float64), "velocity": vel,
                                "size": end[["w", "l", "h"]].to_numpy(np.float64),
                                "rotation": [end["qw"], end["qx"], end["qy"], end["qz"]]})
        self.chunk_frames = int(p["map_chunk_frames"])
        self._chunk: tuple[int, dict] | None = None

    # ---- the forecast state at frame t: pure functions of t ------------------------------------------
    def ego_pose(self, t: int) -> np.ndarray:
        """(x, y, yaw) of the forecast ego at frame t: on the lane path, the initial offset blended away."""
        k = t - self.last
        pose = self.path.at(self.speed * k / self.fps)
        fade = max(0.0, 1.0 - k / self.blend_frames)
        return np.array([pose[0] + fade * self.offset0[0], pose[1] + fade * self.offset0[1],
                         float(_wrap(pose[2] + fade * self.offset0[2]))])

    def agent_boxes(self, t: int) -> dict[str, dict]:
        dt = (t - self.last) / self.fps
        return {a["instance"]: {"translation": a["xyz"] + a["velocity"] * dt, "size": a["size"],
                                "rotation": a["rotation"], "category": a["category"]} for a in self.agents}

    def _polylines(self, t: int) -> dict:
        """Map polylines around the ego poses of t's chunk of frames (collected once per chunk)."""
        from stage.data.layout_drawing import collect_map_polylines

        c = (t - self.last - 1) // self.chunk_frames
        if self._chunk is None or self._chunk[0] != c:
            a = self.last + 1 + c * self.chunk_frames
            xy = np.array([self.ego_pose(i)[:2] for i in range(a, a + self.chunk_frames)])
            self._chunk = (c, collect_map_polylines(self.map, xy.min(0), xy.max(0), self.radius))
        return self._chunk[1]

    def layout(self, frame_index: int) -> Layout:
        from stage.data.geometry import invert
        from stage.data.layout_drawing import draw_hdmap

        ego = self.ego_pose(frame_index)
        ego_to_global = np.eye(4)
        ego_to_global[:3, :3] = _yaw_quaternion(ego[2]).rotation_matrix
        ego_to_global[:3, 3] = [ego[0], ego[1], self.ego_z]
        global_to_cam = invert(ego_to_global @ self.cam_to_ego)
        hdmap = draw_hdmap(self.hw, self.K, global_to_cam, ego[:2], self._polylines(frame_index), self.radius,
                           self.near, self.width)
        table, _, _, feats, mask = project_boxes(self.agent_boxes(frame_index), global_to_cam, self.K, self.hw,
                                                 self.near, self.context.max_boxes, self.context.visible_only)
        return Layout(hdmap, feats, mask, ego, table)
