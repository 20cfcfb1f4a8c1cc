"""Condition images: HD-map polylines and 3D-box wireframes projected into the camera.

Both are class-coloured lines on black at the output resolution, drawn with the output intrinsic
(sharper than drawing at the source size and resizing). Colours are part of the scene format.
"""

from __future__ import annotations

import cv2
import numpy as np

from stage.data.geometry import BOX_EDGES, clip_segments_to_near_plane, project
from stage.formats.scene import CATEGORY_GROUPS

# RGB. Road edges are the boundary of the drivable area (curbs); dividers and crossings from their layers.
MAP_CLASS_COLOURS = {
    "road_edge": (255, 60, 60),
    "lane_divider": (60, 255, 60),
    "road_divider": (255, 220, 0),
    "ped_crossing": (60, 120, 255),
}
BOX_CLASS_COLOURS = dict(zip(CATEGORY_GROUPS, [
    (255, 0, 0), (255, 128, 0), (255, 255, 0), (200, 100, 50), (150, 75, 0), (0, 255, 255),
    (255, 0, 255), (128, 0, 255), (255, 160, 160), (160, 160, 160), (255, 255, 255),
]))
_DENSIFY_M = 2.0  # polyline vertex spacing, so the radius test is local along long segments


def _densify(coords: np.ndarray) -> np.ndarray:
    out = [coords[:1]]
    for a, b in zip(coords[:-1], coords[1:]):
        n = max(1, int(np.ceil(np.linalg.norm(b - a) / _DENSIFY_M)))
        out.append(a + (b - a) * (np.arange(1, n + 1)[:, None] / n))
    return np.concatenate(out)


def collect_map_polylines(nusc_map, xy_min, xy_max, margin: float) -> dict[str, list[np.ndarray]]:
    """Map elements around a scene's ego path, as densified (N, 3) global polylines per class."""
    patch = (xy_min[0] - margin, xy_min[1] - margin, xy_max[0] + margin, xy_max[1] + margin)
    recs = nusc_map.get_records_in_patch(
        patch, ["drivable_area", "lane_divider", "road_divider", "ped_crossing"], mode="intersect")
    out: dict[str, list[np.ndarray]] = {k: [] for k in MAP_CLASS_COLOURS}

    def add(cls, xy):
        xy = np.asarray(xy, dtype=np.float64)[:, :2]
        if len(xy) >= 2:
            dense = _densify(xy)
            out[cls].append(np.column_stack([dense, np.zeros(len(dense))]))  # the map is the z = 0 plane

    for layer in ("lane_divider", "road_divider"):
        for tok in recs[layer]:
            line = nusc_map.extract_line(nusc_map.get(layer, tok)["line_token"])
            if not line.is_empty:
                add(layer, line.coords)
    for tok in recs["ped_crossing"]:
        poly = nusc_map.extract_polygon(nusc_map.get("ped_crossing", tok)["polygon_token"])
        add("ped_crossing", poly.exterior.coords)
    for tok in recs["drivable_area"]:
        for ptok in nusc_map.get("drivable_area", tok)["polygon_tokens"]:
            poly = nusc_map.extract_polygon(ptok)
            add("road_edge", poly.exterior.coords)
            for ring in poly.interiors:
                add("road_edge", ring.coords)
    return out


def _draw_segments(img, K, a_cam, b_cam, near, colour, width):
    a, b, keep = clip_segments_to_near_plane(a_cam, b_cam, near)
    if not keep.any():
        return
    pa, pb = project(K, a[keep]), project(K, b[keep])
    # Fixed-point (shift=4) keeps sub-pixel positions; far-off-screen ends are clamped for int32.
    pts = np.clip(np.stack([pa, pb], axis=1) * 16, -2**24, 2**24).round().astype(np.int32)
    cv2.polylines(img, list(pts[:, :, None, :]), isClosed=False, color=colour, thickness=width,
                  lineType=cv2.LINE_AA, shift=4)


def draw_hdmap(shape_hw, K, global_to_cam, ego_xy, polylines, radius, near, width) -> np.ndarray:
    img = np.zeros((*shape_hw, 3), dtype=np.uint8)
    for cls, lines in polylines.items():
        for line in lines:
            close = np.linalg.norm(line[:, :2] - ego_xy, axis=1) <= radius
            seg = close[:-1] & close[1:]
            if not seg.any():
                continue
            cam = line @ global_to_cam[:3, :3].T + global_to_cam[:3, 3]
            _draw_segments(img, K, cam[:-1][seg], cam[1:][seg], near, MAP_CLASS_COLOURS[cls], width)
    return img


def draw_boxes(shape_hw, K, corners_cam: list[np.ndarray], category_ids, near, width) -> np.ndarray:
    """Box wireframes, far to near so nearer boxes are drawn on top; the front face in full colour."""
    img = np.zeros((*shape_hw, 3), dtype=np.uint8)
    order = sorted(range(len(corners_cam)), key=lambda i: -corners_cam[i][:, 2].mean())
    edges = np.array(BOX_EDGES)
    for i in order:
        c = corners_cam[i]
        colour = np.array(BOX_CLASS_COLOURS[CATEGORY_GROUPS[category_ids[i]]], dtype=np.float64)
        _draw_segments(img, K, c[edges[4:, 0]], c[edges[4:, 1]], near, tuple((colour * 0.55).tolist()), width)
        _draw_segments(img, K, c[edges[:4, 0]], c[edges[:4, 1]], near, tuple(colour.tolist()), width)
    return img
