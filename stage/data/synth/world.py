"""The deterministic world of one `synth` config: scene plan, city, and each scene's motion and weather.

Every random choice comes from a numpy Generator seeded by (seed, purpose, scene index), so a scene's
content does not depend on how many scenes come before it or on rendering.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from stage.data.synth.camera import Camera
from stage.data.synth.road_network import RoadNetwork
from stage.data.synth.scenery import Weather, buildings, random_weather
from stage.data.synth.trajectories import SceneMotion, simulate_scene
from stage.errors import StageError

SCENE_START_US = 1_600_000_000_000_000      # 2020-09-13, nuScenes-like microsecond timestamps
SCENE_SPACING_US = 3_600_000_000            # scenes an hour apart
ANNOTATION_RADIUS_M = 60.0
_WORLD, _SCENE, _TEXTURE = 1, 2, 3          # random-stream purposes


def token(*parts) -> str:
    """Deterministic 32-hex token of a name."""
    return hashlib.md5("/".join(str(p) for p in parts).encode()).hexdigest()


def rng_for(seed: int, purpose: int, index: int = 0) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, purpose, index]))


@dataclass(frozen=True)
class ScenePlan:
    index: int
    name: str
    split: str                  # "train" or "long"
    seconds: float
    n_frames: int               # camera frames, first and last on a keyframe
    start_us: int

    def timestamp_us(self, frame: int, fps: float) -> int:
        return self.start_us + int(round(frame * 1e6 / fps))


def check_synth_config(synth: dict) -> None:
    """Semantic checks the schema cannot express; raise StageError naming the field."""
    if not synth["camera_fps"] > 0:
        raise StageError(f"synth.camera_fps is {synth['camera_fps']}; set a positive frame rate (nuScenes: 12.0)")
    w, h = synth["image_width"], synth["image_height"]
    if w < 64 or h < 36:
        raise StageError(f"synth.image_width x image_height is {w}x{h}; use at least 64x36 (default 400x225)")
    cy = Camera(w, h).intrinsic[1, 2]
    if h < cy + 0.25 * h or h > 2 * w:
        raise StageError(
            f"synth.image_height {h} does not fit synth.image_width {w}: the horizon sits at row {cy:.0f}, so "
            f"the road would be cut off; use a 16:9 frame (image_height = image_width * 9 / 16 = {round(w * 9 / 16)})")
    for key in ("n_train_scenes", "keyframe_every"):
        if synth[key] < 1:
            raise StageError(f"synth.{key} is {synth[key]}; it must be at least 1")


def frame_count(seconds: float, fps: float, keyframe_every: int) -> int:
    """Frames covering at least `seconds`, rounded up so the chain starts and ends on a keyframe."""
    intervals = math.ceil(seconds * fps - 1e-6)
    intervals = math.ceil(intervals / keyframe_every) * keyframe_every
    return max(intervals, keyframe_every) + 1


def scene_plans(synth: dict) -> list[ScenePlan]:
    plans = []
    specs = ([("train", synth["train_scene_seconds"])] * synth["n_train_scenes"]
             + [("long", synth["long_scene_seconds"])] * synth["n_long_scenes"])
    for i, (split, seconds) in enumerate(specs):
        plans.append(ScenePlan(i, f"synth-{i:04d}", split, float(seconds),
                               frame_count(seconds, synth["camera_fps"], synth["keyframe_every"]),
                               SCENE_START_US + i * SCENE_SPACING_US))
    return plans


class World:
    """City, camera and scene contents of one synth config (cheap to build; scenes simulated on demand)."""

    def __init__(self, synth: dict):
        check_synth_config(synth)
        self.synth = synth
        self.seed = int(synth["seed"])
        self.net = RoadNetwork()
        self.camera = Camera(synth["image_width"], synth["image_height"])
        self.plans = scene_plans(synth)

    @cached_property
    def buildings(self) -> tuple[np.ndarray, np.ndarray]:
        return buildings(self.net, rng_for(self.seed, _WORLD))

    @property
    def texture_seed(self) -> int:
        return int(rng_for(self.seed, _TEXTURE).integers(2 ** 31))

    def plan(self, scene_name: str) -> ScenePlan:
        for p in self.plans:
            if p.name == scene_name:
                return p
        raise StageError(f"scene {scene_name!r} is not in this synth config; scenes are "
                         f"{self.plans[0].name} .. {self.plans[-1].name}")

    def scene(self, plan: ScenePlan) -> tuple[SceneMotion, Weather]:
        rng = rng_for(self.seed, _SCENE, plan.index)
        weather = random_weather(rng)
        motion = simulate_scene(self.net, rng, plan.n_frames, self.synth["camera_fps"])
        return motion, weather

    def instance_token(self, plan: ScenePlan, agent_name: str) -> str:
        return token("instance", self.seed, plan.name, agent_name)
