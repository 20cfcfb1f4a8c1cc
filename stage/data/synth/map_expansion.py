"""The HD map in the devkit's expansion format (maps/expansion/<map_name>.json) and the map mask PNG.

Every layer NuScenesMap reads is present; geometry comes from RoadNetwork, the renderer's source too.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import shapely.geometry as sg
from shapely.ops import unary_union

from stage.data.synth.road_network import CANVAS, CURB_WIDTH, SIDEWALK_WIDTH, RoadNetwork
from stage.data.synth.world import token

MAP_VERSION = "1.3"
MASK_RESOLUTION_M = 0.1            # the devkit's MapMask default; its transform assumes it
LAYERS = ["polygon", "line", "node", "drivable_area", "road_segment", "road_block", "lane", "ped_crossing",
          "walkway", "stop_line", "carpark_area", "road_divider", "lane_divider", "traffic_light",
          "arcline_path_3", "connectivity", "lane_connector"]


class _MapBuilder:
    def __init__(self, map_name: str):
        self.map_name = map_name
        self.layers = {name: [] for name in LAYERS}
        self.layers["arcline_path_3"] = {}
        self.layers["connectivity"] = {}
        self._nodes: dict[tuple, str] = {}

    def tok(self, *name) -> str:
        return token("map", self.map_name, *name)

    def node(self, xy) -> str:
        key = (round(float(xy[0]), 3), round(float(xy[1]), 3))
        if key not in self._nodes:
            t = self.tok("node", *key)
            self._nodes[key] = t
            self.layers["node"].append({"token": t, "x": key[0], "y": key[1]})
        return self._nodes[key]

    def polygon(self, name: str, exterior, holes=()) -> str:
        t = self.tok("polygon", name)
        self.layers["polygon"].append({
            "token": t, "exterior_node_tokens": [self.node(p) for p in exterior],
            "holes": [{"node_tokens": [self.node(p) for p in h]} for h in holes]})
        return t

    def line(self, name: str, points) -> str:
        t = self.tok("line", name)
        self.layers["line"].append({"token": t, "node_tokens": [self.node(p) for p in points]})
        return t


def _rect(xmin, ymin, xmax, ymax):
    return [(xmin, ymin), (xmax, ymin), (xmax, ymax), (xmin, ymax)]


def _exterior(poly: sg.Polygon):
    return list(poly.exterior.coords)[:-1], [list(h.coords)[:-1] for h in poly.interiors]


def build_map(net: RoadNetwork, map_name: str) -> dict:
    b = _MapBuilder(map_name)
    L = b.layers
    rects = net.street_rects()
    road_union = unary_union([sg.box(*r) for _, r, _ in rects])
    drivable_token = b.tok("drivable_area")
    drivable_polys = [road_union] if road_union.geom_type == "Polygon" else list(road_union.geoms)
    L["drivable_area"].append({"token": drivable_token, "polygon_tokens": [
        b.polygon(f"drivable/{i}", *_exterior(p)) for i, p in enumerate(drivable_polys)]})
    for name, r, is_intersection in rects:
        L["road_segment"].append({"token": b.tok(name), "polygon_token": b.polygon(name, _rect(*r)),
                                  "is_intersection": is_intersection, "drivable_area_token": drivable_token})

    walk = road_union.buffer(CURB_WIDTH + SIDEWALK_WIDTH, join_style=2).difference(road_union.buffer(CURB_WIDTH, join_style=2))
    for i, p in enumerate([walk] if walk.geom_type == "Polygon" else walk.geoms):
        L["walkway"].append({"token": b.tok("walkway", i), "polygon_token": b.polygon(f"walkway/{i}", *_exterior(p))})

    for name, corners in net.crossing_rects():
        L["ped_crossing"].append({"token": b.tok(name), "polygon_token": b.polygon(name, corners),
                                  "road_segment_token": None})

    road_dividers, lane_dividers = net.divider_lines()
    for name, pts in road_dividers:
        L["road_divider"].append({"token": b.tok(name), "line_token": b.line(name, pts), "road_segment_token": None})
    for name, pts in lane_dividers:
        L["lane_divider"].append({"token": b.tok(name), "line_token": b.line(name, pts),
                                  "lane_divider_segments": [{"node_token": b.node(p), "segment_type": "DOUBLE_DASHED_WHITE"}
                                                            for p in pts]})

    for curve in net.curves.values():
        t = b.tok(curve.token_name)
        poly = b.polygon(curve.token_name, net.lane_polygon(curve))
        if curve.is_connector:
            L["lane_connector"].append({"token": t, "polygon_token": poly})
        else:
            left, right = net.lane_edges(curve)
            left_type = "DOUBLE_SOLID_YELLOW" if curve.lane_index == 0 else "DOUBLE_DASHED_WHITE"
            right_type = "DOUBLE_DASHED_WHITE" if curve.lane_index == 0 else "NIL"
            L["lane"].append({
                "token": t, "polygon_token": poly, "lane_type": "CAR", "from_edge_line_token": None,
                "to_edge_line_token": None,
                "left_lane_divider_segments": [{"node_token": b.node(p), "segment_type": left_type} for p in left],
                "right_lane_divider_segments": [{"node_token": b.node(p), "segment_type": right_type} for p in right]})
        L["arcline_path_3"][t] = [curve.arcline_path()]
        L["connectivity"][t] = {"incoming": [b.tok(n) for n in curve.incoming],
                                "outgoing": [b.tok(n) for n in curve.outgoing]}

    return {"version": MAP_VERSION, "canvas_edge": [CANVAS, CANVAS], **L}


def curve_token(map_name: str, curve_name: str) -> str:
    """Map token of a RoadNetwork lane/connector (lets trajectories and map refer to the same lane)."""
    return token("map", map_name, curve_name)


def write_map(net: RoadNetwork, map_name: str, dataroot: Path) -> tuple[Path, Path]:
    """Write the expansion JSON and the drivable-area mask PNG; returns their paths."""
    exp_dir = dataroot / "maps" / "expansion"
    exp_dir.mkdir(parents=True, exist_ok=True)
    exp_path = exp_dir / f"{map_name}.json"
    exp_path.write_text(json.dumps(build_map(net, map_name), separators=(",", ":")))

    size = int(round(CANVAS / MASK_RESOLUTION_M))
    mask = np.zeros((size, size), np.uint8)
    for _, (xmin, ymin, xmax, ymax), _ in net.street_rects():
        # Image row 0 is the top (largest y), as the devkit's MapMask transform expects.
        c0, c1 = int(xmin / MASK_RESOLUTION_M), int(xmax / MASK_RESOLUTION_M)
        r0, r1 = size - int(ymax / MASK_RESOLUTION_M), size - int(ymin / MASK_RESOLUTION_M)
        mask[r0:r1, c0:c1] = 255
    mask_path = dataroot / "maps" / f"{token('mask', map_name)}.png"
    cv2.imwrite(str(mask_path), mask, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return exp_path, mask_path

