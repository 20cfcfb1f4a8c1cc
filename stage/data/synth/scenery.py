"""What the camera sees besides the annotated agents: buildings on the lots, and each scene's weather."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from stage.data.synth.road_network import RoadNetwork

FACADES = [(0.78, 0.72, 0.62), (0.62, 0.62, 0.64), (0.62, 0.36, 0.28), (0.45, 0.55, 0.65),
           (0.85, 0.83, 0.78), (0.5, 0.46, 0.4), (0.7, 0.66, 0.5)]


@dataclass(frozen=True)
class Weather:
    name: str
    sky_top: tuple
    sky_horizon: tuple
    fog_colour: tuple
    fog_distance: float        # metres at which 63 % of a surface's colour is haze
    ambient: float
    diffuse: float
    sun_elevation: float       # radians
    sun_azimuth: float         # radians, world frame
    tint: tuple                # multiplies every lit surface (warm light at dusk)

    @property
    def sun_direction(self) -> np.ndarray:
        ce = math.cos(self.sun_elevation)
        return np.array([ce * math.cos(self.sun_azimuth), ce * math.sin(self.sun_azimuth),
                         math.sin(self.sun_elevation)])


PRESETS = {
    "sun": dict(sky_top=(0.30, 0.50, 0.85), sky_horizon=(0.72, 0.82, 0.94), fog_colour=(0.75, 0.82, 0.9),
                fog_distance=700.0, ambient=0.5, diffuse=0.65, sun_elevation=0.8, tint=(1.0, 0.98, 0.94)),
    "overcast": dict(sky_top=(0.58, 0.6, 0.64), sky_horizon=(0.8, 0.81, 0.82), fog_colour=(0.78, 0.79, 0.8),
                     fog_distance=350.0, ambient=0.82, diffuse=0.15, sun_elevation=1.0, tint=(0.95, 0.96, 0.98)),
    "dusk": dict(sky_top=(0.14, 0.16, 0.34), sky_horizon=(0.95, 0.58, 0.32), fog_colour=(0.62, 0.45, 0.38),
                 fog_distance=450.0, ambient=0.35, diffuse=0.55, sun_elevation=0.12, tint=(1.0, 0.8, 0.62)),
    "fog": dict(sky_top=(0.72, 0.73, 0.75), sky_horizon=(0.8, 0.8, 0.81), fog_colour=(0.8, 0.8, 0.81),
                fog_distance=55.0, ambient=0.8, diffuse=0.1, sun_elevation=0.9, tint=(0.97, 0.97, 0.98)),
}
PRESET_WEIGHTS = {"sun": 0.4, "overcast": 0.25, "dusk": 0.2, "fog": 0.15}


def random_weather(rng: np.random.Generator) -> Weather:
    names = list(PRESET_WEIGHTS)
    name = names[rng.choice(len(names), p=np.array(list(PRESET_WEIGHTS.values())))]
    return Weather(name=name, sun_azimuth=float(rng.uniform(-math.pi, math.pi)), **PRESETS[name])


def buildings(net: RoadNetwork, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Boxes along each lot's edges: (N, 7) centre xyz, w, l, h, yaw and (N, 3) facade colours."""
    boxes, colours = [], []
    for xmin, ymin, xmax, ymax in net.lots():
        for side in range(4):
            # Walk along one edge of the lot, placing buildings of random frontage, depth and height.
            horizontal = side in (0, 2)
            a, b = (xmin, xmax) if horizontal else (ymin, ymax)
            pos = a + rng.uniform(0.0, 4.0)
            while pos < b - 8.0:
                front = min(rng.uniform(10.0, 28.0), b - pos)
                depth = rng.uniform(10.0, 18.0)
                height = rng.uniform(6.0, 35.0) if rng.random() > 0.15 else rng.uniform(3.0, 5.0)
                if rng.random() < 0.85:
                    centre_along = pos + front / 2
                    if side == 0:
                        cx, cy = centre_along, ymin + depth / 2
                    elif side == 2:
                        cx, cy = centre_along, ymax - depth / 2
                    elif side == 1:
                        cx, cy = xmax - depth / 2, centre_along
                    else:
                        cx, cy = xmin + depth / 2, centre_along
                    w, l = (depth, front) if horizontal else (front, depth)
                    # Size (w, l) along (y, x) with yaw 0: l runs along x.
                    boxes.append([cx, cy, height / 2, w, l, height, 0.0])
                    base = np.array(FACADES[rng.integers(len(FACADES))])
                    colours.append(np.clip(base + rng.normal(0, 0.04, 3), 0, 1))
                pos += front + rng.uniform(1.0, 6.0)
    return np.array(boxes), np.array(colours)
