"""The synthetic city's streets: one geometry source for the HD map and for the camera renderer.

A square grid of two-way streets (right-hand traffic) crossing at intersections. Across a street, from
the centre line outwards on each side: two driving lanes, a parking strip, a curb, a sidewalk; beyond
the sidewalk lie the building lots. Zebra crossings span the street just outside each intersection.

Lanes and the lane connectors inside intersections are straight lines or quarter circles, so each is one
arcline path; `LaneCurve.pose_at` evaluates the same curves the map writes as `arcline_path_3`.
`ground_layers` classifies ground points analytically with the same constants the map polygons use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

N_STREETS = 6               # streets per axis; the outer ones form a ring, so no dead ends
BLOCK = 90.0                # metres between neighbouring street centre lines
ORIGIN = 100.0              # first street's coordinate: keeps the outer blocks at positive coordinates
LANE_WIDTH = 3.5
LANES_PER_DIRECTION = 2     # lane 0 next to the centre line, lane 1 outside it
PARKING_WIDTH = 2.5
HALF_WIDTH = LANES_PER_DIRECTION * LANE_WIDTH + PARKING_WIDTH   # centre line to curb
CURB_WIDTH = 0.25
SIDEWALK_WIDTH = 3.5
CROSSING_NEAR, CROSSING_FAR = 0.5, 3.5    # zebra extent, metres from the intersection box edge
MARKINGS_START = CROSSING_FAR + 1.0       # dividers stop short of the crossings
DASH_ON, DASH_PERIOD = 3.0, 6.0           # dashed lane divider: 3 m painted, 3 m gap
DIVIDER_WIDTH = 0.2
CENTRE_LINE_WIDTH = 0.25
ZEBRA_STRIPE, ZEBRA_PERIOD = 0.6, 1.2
CANVAS = 2 * ORIGIN + (N_STREETS - 1) * BLOCK    # map canvas edge (square), metres

HEADINGS = {"E": 0.0, "N": math.pi / 2, "W": math.pi, "S": -math.pi / 2}
STEP = {"E": (1, 0), "N": (0, 1), "W": (-1, 0), "S": (0, -1)}
LEFT_OF = {"E": "N", "N": "W", "W": "S", "S": "E"}
RIGHT_OF = {v: k for k, v in LEFT_OF.items()}


def street_coord(i: int) -> float:
    """Centre-line coordinate of street i (x of a north-south street, y of an east-west one)."""
    return ORIGIN + i * BLOCK


def lane_offset(lane_index: int) -> float:
    """Distance from the centre line to the centre of a lane (to the right of travel)."""
    return (lane_index + 0.5) * LANE_WIDTH


@dataclass
class LaneCurve:
    """One lane or lane connector: a straight line or a quarter circle from `start_pose`.

    curvature is 0 (straight), +1/r (turning left) or -1/r (turning right).
    """

    token_name: str
    start_pose: tuple[float, float, float]
    length: float
    curvature: float
    is_connector: bool
    lane_index: int
    outgoing: list[str] = field(default_factory=list)
    incoming: list[str] = field(default_factory=list)

    def pose_at(self, s: np.ndarray) -> np.ndarray:
        """(N, 3) x, y, yaw at arc lengths s (clipped to the curve)."""
        s = np.clip(np.asarray(s, dtype=np.float64), 0.0, self.length)
        x0, y0, h0 = self.start_pose
        k = self.curvature
        if k == 0.0:
            return np.stack([x0 + s * math.cos(h0), y0 + s * math.sin(h0), np.full_like(s, h0)], axis=-1)
        h = h0 + k * s
        return np.stack([x0 + (np.sin(h) - math.sin(h0)) / k, y0 - (np.cos(h) - math.cos(h0)) / k,
                         np.arctan2(np.sin(h), np.cos(h))], axis=-1)

    @property
    def radius(self) -> float:
        return abs(1.0 / self.curvature) if self.curvature else math.inf

    def arcline_path(self) -> dict:
        """The devkit's arcline_path_3 record (shape + segment lengths) for this curve."""
        end = self.pose_at(np.array([self.length]))[0]
        if self.curvature == 0.0:
            shape, lengths, radius = "LSL", [0.0, self.length, 0.0], 999.0
        else:
            shape = "LSL" if self.curvature > 0 else "RSR"
            lengths, radius = [self.length, 0.0, 0.0], self.radius
        return {"start_pose": [float(v) for v in self.start_pose], "end_pose": [float(v) for v in end],
                "shape": shape, "radius": float(radius), "segment_length": [float(v) for v in lengths]}


class RoadNetwork:
    """The street grid: lanes, connectors and the polygons/lines the map and renderer share."""

    def __init__(self):
        self.n = N_STREETS
        self.coords = [street_coord(i) for i in range(self.n)]
        self.lo = self.coords[0] - HALF_WIDTH          # road surface spans [lo, hi] on both axes
        self.hi = self.coords[-1] + HALF_WIDTH
        self.segment_length = BLOCK - 2 * HALF_WIDTH   # lane length between intersection boxes
        self.curves: dict[str, LaneCurve] = {}
        self._build_lanes()
        self._build_connectors()

    # --- topology -------------------------------------------------------------------------------
    def inside(self, i: int, j: int) -> bool:
        return 0 <= i < self.n and 0 <= j < self.n

    def intersection_xy(self, i: int, j: int) -> tuple[float, float]:
        return self.coords[i], self.coords[j]

    @staticmethod
    def lane_name(i: int, j: int, d: str, k: int) -> str:
        """Lane leaving intersection (i, j) towards direction d, lane index k."""
        return f"lane/{i}/{j}/{d}/{k}"

    def _build_lanes(self):
        for i in range(self.n):
            for j in range(self.n):
                for d, (di, dj) in STEP.items():
                    if not self.inside(i + di, j + dj):
                        continue
                    h = HEADINGS[d]
                    cx, cy = self.intersection_xy(i, j)
                    for k in range(LANES_PER_DIRECTION):
                        off = lane_offset(k)
                        x0 = cx + HALF_WIDTH * math.cos(h) + off * math.sin(h)
                        y0 = cy + HALF_WIDTH * math.sin(h) - off * math.cos(h)
                        name = self.lane_name(i, j, d, k)
                        self.curves[name] = LaneCurve(name, (x0, y0, h), self.segment_length, 0.0, False, k)

    def _build_connectors(self):
        for name, lane in list(self.curves.items()):
            _, i, j, d, k = name.split("/")
            i, j, k = int(i), int(j), int(k)
            di, dj = STEP[d]
            ti, tj = i + di, j + dj                      # the intersection this lane enters
            x0, y0, h = lane.pose_at(np.array([lane.length]))[0]
            off = lane_offset(k)
            for turn, d_out in (("straight", d), ("left", LEFT_OF[d]), ("right", RIGHT_OF[d])):
                oi, oj = STEP[d_out]
                if not self.inside(ti + oi, tj + oj):
                    continue
                if turn == "straight":
                    length, curvature = 2 * HALF_WIDTH, 0.0
                else:
                    r = HALF_WIDTH + off if turn == "left" else HALF_WIDTH - off
                    length, curvature = r * math.pi / 2, (1.0 if turn == "left" else -1.0) / r
                cname = f"connector/{ti}/{tj}/{d}/{k}/{turn}"
                out_lane = self.lane_name(ti, tj, d_out, k)
                conn = LaneCurve(cname, (float(x0), float(y0), float(h)), length, curvature, True, k,
                                 outgoing=[out_lane], incoming=[name])
                self.curves[cname] = conn
                lane.outgoing.append(cname)
                self.curves[out_lane].incoming.append(cname)

    def lanes(self) -> list[LaneCurve]:
        return [c for c in self.curves.values() if not c.is_connector]

    def connectors(self) -> list[LaneCurve]:
        return [c for c in self.curves.values() if c.is_connector]

    # --- map geometry (polygons as lists of (x, y), lines as lists of (x, y)) ---------------------
    def street_rects(self) -> list[tuple[str, tuple[float, float, float, float], bool]]:
        """Road surface rectangles (name, (xmin, ymin, xmax, ymax), is_intersection)."""
        rects = []
        w, c = HALF_WIDTH, self.coords
        for i in range(self.n):
            for j in range(self.n):
                rects.append((f"intersection/{i}/{j}", (c[i] - w, c[j] - w, c[i] + w, c[j] + w), True))
                if i + 1 < self.n:
                    rects.append((f"segment/{i}/{j}/E", (c[i] + w, c[j] - w, c[i + 1] - w, c[j] + w), False))
                if j + 1 < self.n:
                    rects.append((f"segment/{i}/{j}/N", (c[i] - w, c[j] + w, c[i] + w, c[j + 1] - w), False))
        return rects

    def _segment_frames(self):
        """Each street segment once (eastward/northward), as (name, start xy, unit along, unit right)."""
        for i in range(self.n):
            for j in range(self.n):
                cx, cy = self.intersection_xy(i, j)
                if i + 1 < self.n:
                    yield f"{i}/{j}/E", np.array([cx + HALF_WIDTH, cy]), np.array([1.0, 0.0]), np.array([0.0, -1.0])
                if j + 1 < self.n:
                    yield f"{i}/{j}/N", np.array([cx, cy + HALF_WIDTH]), np.array([0.0, 1.0]), np.array([1.0, 0.0])

    def divider_lines(self) -> tuple[list, list]:
        """(road_dividers, lane_dividers): [(name, [(x, y), ...])], nodes every <= 10 m.

        The devkit finds a line in a patch by its nodes, so long lines need intermediate nodes.
        """
        a0, a1 = MARKINGS_START, self.segment_length - MARKINGS_START
        n_nodes = int(math.ceil((a1 - a0) / 10.0)) + 1
        along = np.linspace(a0, a1, n_nodes)
        road, lane = [], []
        for name, p0, u, r in self._segment_frames():
            road.append((f"road_divider/{name}", [tuple(p0 + a * u) for a in along]))
            for side, sign in (("right", 1.0), ("left", -1.0)):
                for k in range(1, LANES_PER_DIRECTION):
                    pts = [tuple(p0 + a * u + sign * k * LANE_WIDTH * r) for a in along]
                    lane.append((f"lane_divider/{name}/{side}/{k}", pts))
        return road, lane

    def crossing_rects(self) -> list[tuple[str, list[tuple[float, float]]]]:
        """Zebra crossings, one at each end of each street segment."""
        out = []
        L = self.segment_length
        for name, p0, u, r in self._segment_frames():
            for end, (a0, a1) in (("start", (CROSSING_NEAR, CROSSING_FAR)), ("end", (L - CROSSING_FAR, L - CROSSING_NEAR))):
                corners = [p0 + a0 * u - HALF_WIDTH * r, p0 + a1 * u - HALF_WIDTH * r,
                           p0 + a1 * u + HALF_WIDTH * r, p0 + a0 * u + HALF_WIDTH * r]
                out.append((f"ped_crossing/{name}/{end}", [tuple(c) for c in corners]))
        return out

    def lane_polygon(self, curve: LaneCurve, n: int = 9) -> list[tuple[float, float]]:
        """Lane outline: the centre curve offset by half a lane width on both sides."""
        poses = curve.pose_at(np.linspace(0.0, curve.length, n if curve.curvature else 2))
        left = poses[:, :2] + (LANE_WIDTH / 2) * np.stack([-np.sin(poses[:, 2]), np.cos(poses[:, 2])], -1)
        right = poses[:, :2] - (LANE_WIDTH / 2) * np.stack([-np.sin(poses[:, 2]), np.cos(poses[:, 2])], -1)
        return [tuple(p) for p in np.concatenate([right, left[::-1]])]

    def lane_edges(self, curve: LaneCurve) -> tuple[list, list]:
        """(left edge points, right edge points) along a straight lane, in travel order."""
        poses = curve.pose_at(np.linspace(0.0, curve.length, 2))
        normal = np.stack([-np.sin(poses[:, 2]), np.cos(poses[:, 2])], -1)
        return ([tuple(p) for p in poses[:, :2] + LANE_WIDTH / 2 * normal],
                [tuple(p) for p in poses[:, :2] - LANE_WIDTH / 2 * normal])

    def lots(self) -> list[tuple[float, float, float, float]]:
        """Building lots (xmin, ymin, xmax, ymax): each block's land inside its sidewalks, outer ring included."""
        inset = HALF_WIDTH + CURB_WIDTH + SIDEWALK_WIDTH + 1.0
        edges = [self.coords[0] - BLOCK] + self.coords + [self.coords[-1] + BLOCK]
        out = []
        for a, b in zip(edges[:-1], edges[1:]):
            for c, d in zip(edges[:-1], edges[1:]):
                out.append((a + inset, c + inset, b - inset, d - inset))
        return out

    # --- renderer: the same layout, evaluated per ground point ------------------------------------
    def ground_layers(self, x: np.ndarray, y: np.ndarray, footprint: np.ndarray) -> dict[str, np.ndarray]:
        """Coverage in [0, 1] of each ground material at world points (x, y).

        footprint: metres per pixel at each point, so thin markings fade instead of aliasing.
        Returns road, curb, sidewalk (lot is the rest), white (dividers, zebras), yellow (centre line).
        """
        c0, n, w = self.coords[0], self.n, HALF_WIDTH
        ix = np.clip(np.rint((x - c0) / BLOCK), 0, n - 1)
        iy = np.clip(np.rint((y - c0) / BLOCK), 0, n - 1)
        dx = x - (c0 + ix * BLOCK)
        dy = y - (c0 + iy * BLOCK)
        in_square = (x > self.lo) & (x < self.hi) & (y > self.lo) & (y < self.hi)
        # Signed distance to the road edge (negative on the road); Chebyshev outside the grid so the
        # sidewalk ring has square corners like the map's mitred walkway polygon.
        inner = np.minimum(np.abs(dx), np.abs(dy)) - w
        outer = np.maximum(np.maximum(self.lo - x, x - self.hi), np.maximum(self.lo - y, y - self.hi))
        edge = np.where(in_square, inner, outer)
        fp = np.maximum(footprint, 1e-3)

        def band(dist, half):   # anti-aliased coverage of |dist| < half
            return np.clip((half - np.abs(dist)) / fp + 0.5, 0.0, 1.0)

        road = np.clip(-edge / fp + 0.5, 0.0, 1.0)
        curb = band(edge - CURB_WIDTH / 2, CURB_WIDTH / 2)
        sidewalk = band(edge - CURB_WIDTH - SIDEWALK_WIDTH / 2, SIDEWALK_WIDTH / 2)

        on_v = np.abs(dx) < w
        on_h = np.abs(dy) < w
        crossing_box = on_v & on_h
        lateral = np.where(on_v, dx, dy)
        seg_x = np.clip(np.floor((x - c0) / BLOCK), 0, n - 2)
        seg_y = np.clip(np.floor((y - c0) / BLOCK), 0, n - 2)
        along = np.where(on_v, y - (c0 + seg_y * BLOCK), x - (c0 + seg_x * BLOCK)) - w
        L = self.segment_length
        marked = (~crossing_box) & (along > MARKINGS_START) & (along < L - MARKINGS_START) & (road > 0)
        yellow = np.where(marked, band(lateral, CENTRE_LINE_WIDTH / 2), 0.0)
        dash = np.mod(along - MARKINGS_START, DASH_PERIOD) < DASH_ON
        white = np.zeros_like(x)
        for k in range(1, LANES_PER_DIRECTION):
            white = np.maximum(white, band(np.abs(lateral) - k * LANE_WIDTH, DIVIDER_WIDTH / 2))
        white = np.where(marked & dash, white, 0.0)
        in_zebra = (((along > CROSSING_NEAR) & (along < CROSSING_FAR))
                    | ((along > L - CROSSING_FAR) & (along < L - CROSSING_NEAR)))
        in_zebra &= (~crossing_box) & (np.abs(lateral) < w - 0.3)
        # Stripes run along the street; fade them where a pixel spans several stripe periods.
        stripe = band(np.mod(lateral, ZEBRA_PERIOD) - ZEBRA_STRIPE / 2, ZEBRA_STRIPE / 2)
        stripe = np.where(fp > ZEBRA_PERIOD, 0.5, stripe)
        white = np.maximum(white, np.where(in_zebra, stripe, 0.0))
        return {"road": road, "curb": curb, "sidewalk": sidewalk, "white": white * road, "yellow": yellow * road}

    def dash_centres(self, line: list[tuple[float, float]]) -> np.ndarray:
        """Points at the middle of each painted dash along a lane-divider line (for checks)."""
        p = np.asarray(line)
        u = (p[-1] - p[0]) / np.linalg.norm(p[-1] - p[0])
        length = float(np.linalg.norm(p[-1] - p[0]))
        a = np.arange(DASH_ON / 2, length - DASH_ON / 2, DASH_PERIOD)
        return p[0] + a[:, None] * u
