"""Who moves where: the ego's route and every agent's motion in one scene, on a fixed time grid.

Vehicles (the ego first) follow routes of lanes and connectors and are simulated together: each one
keeps its cruise speed unless a curve, a planned stop (decelerate, wait, go) or a vehicle ahead slows
it. At crossings a vehicle yields only to vehicles listed before it, so the ego never waits on a car
that waits on the ego. Pedestrians walk loops on the sidewalks; parked cars stand in parking strips.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from stage.data.synth.road_network import (BLOCK, CURB_WIDTH, HALF_WIDTH, PARKING_WIDTH, SIDEWALK_WIDTH,
                                           LaneCurve, RoadNetwork, lane_offset)

# (category, width, length, height) of each agent kind; nuScenes-typical sizes.
KINDS = {
    "car": ("vehicle.car", 1.9, 4.6, 1.65),
    "truck": ("vehicle.truck", 2.5, 7.0, 3.0),
    "bus": ("vehicle.bus.rigid", 2.9, 11.0, 3.4),
    "bicycle": ("vehicle.bicycle", 0.7, 1.8, 1.7),
    "pedestrian": ("human.pedestrian.adult", 0.65, 0.7, 1.75),
}
CRUISE = {"car": (7.0, 10.0), "truck": (6.0, 8.0), "bus": (6.0, 8.0), "bicycle": (3.5, 5.0)}
ACCEL, BRAKE = 1.5, 3.0            # m/s^2 comfortable acceleration / braking
LATERAL_ACCEL = 2.0                # m/s^2 in turns
MIN_GAP = 2.5                      # metres kept to the vehicle ahead when stopped
STOP_BEFORE_LANE_END = 6.0         # stop line: ahead of the zebra crossing


class Path:
    """Concatenated curves, evaluated by arc length."""

    def __init__(self, curves: list[LaneCurve]):
        self.curves = curves
        self.ends = np.cumsum([c.length for c in curves])
        self.starts = self.ends - np.array([c.length for c in curves])
        self.length = float(self.ends[-1])

    def pose_at(self, s: np.ndarray) -> np.ndarray:
        s = np.atleast_1d(np.asarray(s, dtype=np.float64))
        idx = np.clip(np.searchsorted(self.ends, s, side="right"), 0, len(self.curves) - 1)
        out = np.empty((len(s), 3))
        for i in np.unique(idx):
            m = idx == i
            out[m] = self.curves[i].pose_at(s[m] - self.starts[i])
        return out


@dataclass
class Agent:
    """One annotated object of a scene; poses are filled by the simulation."""

    name: str                      # unique within the scene; instance tokens derive from it
    kind: str                      # key of KINDS
    attribute_moving: bool = True
    parked: bool = False
    colour: tuple[float, float, float] = (0.5, 0.5, 0.5)
    poses: np.ndarray = field(default=None, repr=False)   # (T, 3) x, y, yaw
    speeds: np.ndarray = field(default=None, repr=False)  # (T,)

    @property
    def category(self) -> str:
        return KINDS[self.kind][0]

    @property
    def size_wlh(self) -> tuple[float, float, float]:
        return KINDS[self.kind][1:]


@dataclass
class SceneMotion:
    times_s: np.ndarray            # (T,) seconds from the scene start
    ego: np.ndarray                # (T, 3) x, y, yaw of the ego (rear-axle origin on the ground)
    ego_speed: np.ndarray          # (T,)
    agents: list[Agent]


@dataclass
class _Vehicle:
    path: Path
    s: float
    v: float
    cruise: float
    length: float
    stops: list[list[float]]       # [s_stop, wait_seconds] in path order; removed once served
    limits: list[tuple[float, float, float]]   # (s_start, s_end, v_max) of the curves
    waited: float = 0.0


def random_route(net: RoadNetwork, rng: np.random.Generator, first: str, min_length: float) -> list[LaneCurve]:
    """Lanes and connectors from lane `first` on, turning at random, at least min_length long."""
    curves = [net.curves[first]]
    total = curves[0].length
    while total < min_length:
        options = curves[-1].outgoing
        if curves[-1].is_connector:
            nxt = options[0]
        else:
            weights = np.array([0.5 if o.endswith("straight") else 0.25 for o in options])
            nxt = options[rng.choice(len(options), p=weights / weights.sum())]
        curves.append(net.curves[nxt])
        total += curves[-1].length
    return curves


def _vehicle(path: Path, s0: float, cruise: float, length: float, rng, stop_prob: float) -> _Vehicle:
    limits, stops = [], []
    for c, a, b in zip(path.curves, path.starts, path.ends):
        if c.curvature:
            limits.append((a, b, max(3.0, math.sqrt(LATERAL_ACCEL * c.radius))))
        if not c.is_connector and b - STOP_BEFORE_LANE_END > s0 + 5.0 and rng.random() < stop_prob:
            stops.append([b - STOP_BEFORE_LANE_END, float(rng.uniform(2.0, 5.0))])
    return _Vehicle(path, s0, cruise * 0.8, cruise, length, stops, limits)


def _allowed_speed(veh: _Vehicle) -> float:
    v = veh.cruise
    for a, b, vmax in veh.limits:
        if b < veh.s:
            continue
        if a <= veh.s:
            v = min(v, vmax)
        elif a - veh.s < 60.0:
            v = min(v, math.sqrt(vmax ** 2 + 2 * BRAKE * 0.6 * (a - veh.s)))
    if veh.stops:
        d = veh.stops[0][0] - veh.s
        v = min(v, math.sqrt(2 * BRAKE * 0.6 * max(d, 0.0)))
    return v


def simulate_vehicles(vehicles: list[_Vehicle], n_frames: int, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """(T, N, 3) poses and (T, N) speeds; vehicle i yields to crossing vehicles j < i."""
    n = len(vehicles)
    poses = np.zeros((n_frames, n, 3))
    speeds = np.zeros((n_frames, n))
    lengths = np.array([v.length for v in vehicles])
    rank = np.arange(n)
    for t in range(n_frames):
        cur = np.array([v.path.pose_at(v.s)[0] for v in vehicles])
        vel = np.array([v.v for v in vehicles])
        poses[t], speeds[t] = cur, vel
        # Everyone's position in everyone's frame: lon[i, j] ahead of i, lat[i, j] to its left.
        d = cur[None, :, :2] - cur[:, None, :2]
        c, s = np.cos(cur[:, 2])[:, None], np.sin(cur[:, 2])[:, None]
        lon = d[..., 0] * c + d[..., 1] * s
        lat = -d[..., 0] * s + d[..., 1] * c
        dh = np.abs(np.angle(np.exp(1j * (cur[None, :, 2] - cur[:, None, 2]))))
        same_way = dh < math.pi / 4
        relevant = (lon > 0) & (lon < 40.0) & (np.abs(lat) < 2.0) & (same_way | (rank[None, :] < rank[:, None]))
        np.fill_diagonal(relevant, False)
        gap = lon - (lengths[:, None] + lengths[None, :]) / 2 - MIN_GAP
        lead_v = np.where(same_way, np.maximum(vel[None, :] * np.cos(dh), 0.0), 0.0)
        follow = np.sqrt(np.maximum(lead_v ** 2 + 2 * BRAKE * np.maximum(gap, 0.0), 0.0))
        follow = np.where(gap > 0, follow, 0.0)
        follow_limit = np.where(relevant, follow, np.inf).min(axis=1)
        for i, veh in enumerate(vehicles):
            if veh.stops and veh.s >= veh.stops[0][0] - 0.5 and veh.v < 0.3:
                veh.waited += dt
                if veh.waited >= veh.stops[0][1]:
                    veh.stops.pop(0)
                    veh.waited = 0.0
                veh.v = 0.0
                continue
            target = min(_allowed_speed(veh), follow_limit[i])
            veh.v = max(0.0, min(veh.v + ACCEL * dt, target))
            veh.s = min(veh.s + veh.v * dt, veh.path.length)
    return poses, speeds


def _sidewalk_loop(net: RoadNetwork, bi: int, bj: int) -> Path:
    """Closed walk around inner block (bi, bj) on the middle of its sidewalk, counter-clockwise."""
    off = HALF_WIDTH + CURB_WIDTH + SIDEWALK_WIDTH / 2
    x0, y0 = net.coords[bi] + off, net.coords[bj] + off
    x1, y1 = net.coords[bi + 1] - off, net.coords[bj + 1] - off
    corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]
    curves = []
    for (ax, ay), (bx, by) in zip(corners[:-1], corners[1:]):
        curves.append(LaneCurve("walk", (ax, ay, math.atan2(by - ay, bx - ax)), math.hypot(bx - ax, by - ay),
                                0.0, False, 0))
    return Path(curves * 12)   # repeated: long enough for any scene


def _random_colour(rng, kind: str) -> tuple[float, float, float]:
    if kind == "pedestrian":
        return tuple(float(v) for v in rng.uniform(0.15, 0.85, 3))
    palette = [(0.85, 0.85, 0.85), (0.1, 0.1, 0.12), (0.55, 0.56, 0.6), (0.7, 0.1, 0.1), (0.1, 0.2, 0.55),
               (0.9, 0.75, 0.2), (0.2, 0.45, 0.3), (0.95, 0.95, 0.92)]
    base = palette[rng.integers(len(palette))]
    return tuple(float(np.clip(b + rng.normal(0, 0.03), 0, 1)) for b in base)


def simulate_scene(net: RoadNetwork, rng: np.random.Generator, n_frames: int, fps: float) -> SceneMotion:
    """Ego route, agents around it and their motion over n_frames camera frames."""
    dt = 1.0 / fps
    duration = (n_frames - 1) * dt
    reach = 10.5 * duration + 60.0                       # farthest any vehicle can drive
    lanes = net.lanes()

    ego_lane = lanes[rng.integers(len(lanes))]
    ego_path = Path(random_route(net, rng, ego_lane.token_name, reach + 40.0))
    ego = _vehicle(ego_path, float(rng.uniform(0.0, ego_lane.length * 0.4)), float(rng.uniform(8.0, 10.0)),
                   4.8, rng, stop_prob=0.4)
    route_xy = ego_path.pose_at(np.linspace(0.0, min(ego_path.length, ego.s + 10.0 * duration + 40), 64))[:, :2]

    lane_mid = np.array([c.pose_at(np.array([c.length / 2]))[0, :2] for c in lanes])
    near_route = np.min(np.linalg.norm(lane_mid[:, None] - route_xy[None], axis=-1), axis=1) < 90.0
    candidates = [c for c, ok in zip(lanes, near_route) if ok]
    route_length = 9.0 * duration + 40.0
    vehicles, agents = [ego], []
    occupied = [ego_path.pose_at(ego.s)[0, :2]]

    def free(xy, radius):
        return all(np.linalg.norm(xy - o) > radius for o in occupied)

    n_moving = int(route_length / 10.0) + 4
    for k in range(n_moving):
        kind = rng.choice(["car"] * 14 + ["truck", "truck", "bus", "bicycle", "bicycle"])
        lane = candidates[rng.integers(len(candidates))]
        if kind == "bicycle" and lane.lane_index == 0:
            continue
        s0 = float(rng.uniform(0.0, lane.length))
        xy = lane.pose_at(np.array([s0]))[0, :2]
        if not free(xy, 12.0):
            continue
        occupied.append(xy)
        path = Path(random_route(net, rng, lane.token_name, s0 + reach))
        vehicles.append(_vehicle(path, s0, float(rng.uniform(*CRUISE[kind])), KINDS[kind][2], rng, 0.25))
        agents.append(Agent(f"vehicle{k}", kind, colour=_random_colour(rng, kind)))

    motion = simulate_vehicles(vehicles, n_frames, dt)
    for a, i in zip(agents, range(1, len(vehicles))):
        a.poses, a.speeds = motion[0][:, i], motion[1][:, i]

    n_parked = int(route_length / 15.0)
    for k in range(n_parked):
        lane = candidates[rng.integers(len(candidates))]
        if lane.lane_index != 1:
            continue
        s0 = float(rng.uniform(8.0, lane.length - 8.0))
        x, y, h = lane.pose_at(np.array([s0]))[0]
        shift = (HALF_WIDTH - PARKING_WIDTH / 2) - lane_offset(1)   # from lane 1 into the parking strip
        xy = np.array([x + shift * math.sin(h), y - shift * math.cos(h)])
        if not free(xy, 6.0):
            continue
        occupied.append(xy)
        a = Agent(f"parked{k}", "car", attribute_moving=False, parked=True, colour=_random_colour(rng, "car"))
        a.poses = np.tile([xy[0], xy[1], h], (n_frames, 1))
        a.speeds = np.zeros(n_frames)
        agents.append(a)

    blocks = sorted({(int(np.clip((p[0] - net.coords[0]) // BLOCK, 0, net.n - 2)),
                      int(np.clip((p[1] - net.coords[0]) // BLOCK, 0, net.n - 2))) for p in route_xy})
    n_peds = int(route_length / 8.0)
    for k in range(n_peds):
        bi, bj = blocks[rng.integers(len(blocks))]
        bi = int(np.clip(bi + rng.integers(-1, 2), 0, net.n - 2))
        bj = int(np.clip(bj + rng.integers(-1, 2), 0, net.n - 2))
        loop = _sidewalk_loop(net, bi, bj)
        s0 = float(rng.uniform(0.0, 4 * (BLOCK - 2 * HALF_WIDTH)))
        standing = rng.random() < 0.25
        speed = 0.0 if standing else float(rng.uniform(1.0, 1.6))
        side = 1 if rng.random() < 0.5 else -1    # walking direction around the block
        s = s0 + side * speed * np.arange(n_frames) * dt + 5 * loop.length / 12
        a = Agent(f"pedestrian{k}", "pedestrian", attribute_moving=not standing, colour=_random_colour(rng, "pedestrian"))
        a.poses = loop.pose_at(s)
        if side < 0:
            a.poses[:, 2] = np.angle(np.exp(1j * (a.poses[:, 2] + math.pi)))
        # A little sideways offset so walkers do not share one line.
        lateral = float(rng.uniform(-1.0, 1.0))
        a.poses[:, 0] += lateral * -np.sin(a.poses[:, 2])
        a.poses[:, 1] += lateral * np.cos(a.poses[:, 2])
        a.speeds = np.full(n_frames, speed)
        agents.append(a)

    return SceneMotion(np.arange(n_frames) * dt, motion[0][:, 0], motion[1][:, 0], agents)
