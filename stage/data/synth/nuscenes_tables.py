"""The 13 nuScenes JSON tables of the synthetic world, filled scene by scene.

Layout as in real nuScenes: 2 Hz samples; a 12 Hz CAM_FRONT sample_data chain whose keyframes belong to
their sample and whose sweeps carry the NEXT keyframe's sample token; a keyframe-only LIDAR_TOP channel
(empty point clouds) so readers must select CAM_FRONT by channel; 3D boxes on keyframes only.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from stage.data.synth.camera import LIDAR_TRANSLATION, Camera, pose_matrix, world_from_camera, yaw_quaternion
from stage.data.synth.trajectories import SceneMotion
from stage.data.synth.world import ANNOTATION_RADIUS_M, ScenePlan, token

TABLES = ["category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor", "ego_pose", "log",
          "scene", "sample", "sample_data", "sample_annotation", "map"]
CATEGORIES = [
    "animal", "human.pedestrian.adult", "human.pedestrian.child", "human.pedestrian.construction_worker",
    "human.pedestrian.personal_mobility", "human.pedestrian.police_officer", "human.pedestrian.stroller",
    "human.pedestrian.wheelchair", "movable_object.barrier", "movable_object.debris",
    "movable_object.pushable_pullable", "movable_object.trafficcone", "static_object.bicycle_rack",
    "vehicle.bicycle", "vehicle.bus.bendy", "vehicle.bus.rigid", "vehicle.car", "vehicle.construction",
    "vehicle.emergency.ambulance", "vehicle.emergency.police", "vehicle.motorcycle", "vehicle.trailer",
    "vehicle.truck",
]
ATTRIBUTES = ["vehicle.moving", "vehicle.stopped", "vehicle.parked", "cycle.with_rider", "cycle.without_rider",
              "pedestrian.sitting_lying_down", "pedestrian.standing", "pedestrian.moving"]
VISIBILITY = [("1", "v0-40", "visibility of whole object is between 0 and 40%"),
              ("2", "v40-60", "visibility of whole object is between 40 and 60%"),
              ("3", "v60-80", "visibility of whole object is between 60 and 80%"),
              ("4", "v80-100", "visibility of whole object is between 80 and 100%")]
CAM, LIDAR = "CAM_FRONT", "LIDAR_TOP"


def _attribute(agent, speed: float) -> str:
    if agent.kind == "pedestrian":
        return "pedestrian.moving" if speed > 0.2 else "pedestrian.standing"
    if agent.kind == "bicycle":
        return "cycle.with_rider"
    if agent.parked:
        return "vehicle.parked"
    return "vehicle.moving" if speed > 0.3 else "vehicle.stopped"


def _visibility_token(corners_cam: np.ndarray, K: np.ndarray, width: int, height: int) -> str:
    """Share of the box's corners in front of the camera and inside the image, as a nuScenes level."""
    z = corners_cam[:, 2]
    front = z > 0.5
    u = corners_cam[:, 0] / np.maximum(z, 1e-6) * K[0, 0] + K[0, 2]
    v = corners_cam[:, 1] / np.maximum(z, 1e-6) * K[1, 1] + K[1, 2]
    share = float(np.mean(front & (u >= 0) & (u < width) & (v >= 0) & (v < height)))
    return "1" if share < 0.4 else "2" if share < 0.6 else "3" if share < 0.8 else "4"


def box_corners(centre, wlh, yaw) -> np.ndarray:
    """(8, 3) corners of one box in the global frame."""
    w, l, h = wlh
    xs = np.array([1, 1, -1, -1, 1, 1, -1, -1]) * l / 2
    ys = np.array([1, -1, -1, 1, 1, -1, -1, 1]) * w / 2
    zs = np.array([1, 1, 1, 1, -1, -1, -1, -1]) * h / 2
    c, s = np.cos(yaw), np.sin(yaw)
    return np.stack([centre[0] + c * xs - s * ys, centre[1] + s * xs + c * ys, centre[2] + zs], -1)


class NuScenesTables:
    def __init__(self, seed: int, map_name: str, camera: Camera):
        self.seed = seed
        self.map_name = map_name
        self.camera = camera
        self.t = {name: [] for name in TABLES}
        for name in CATEGORIES:
            self.t["category"].append({"token": token("category", name), "name": name,
                                       "description": f"nuScenes category {name}"})
        for name in ATTRIBUTES:
            self.t["attribute"].append({"token": token("attribute", name), "name": name,
                                        "description": f"nuScenes attribute {name}"})
        for tok, level, desc in VISIBILITY:
            self.t["visibility"].append({"token": tok, "level": level, "description": desc})
        for channel, modality in ((CAM, "camera"), (LIDAR, "lidar")):
            self.t["sensor"].append({"token": token("sensor", channel), "channel": channel, "modality": modality})
        self.cam_calib = token("calibrated_sensor", seed, CAM)
        self.lidar_calib = token("calibrated_sensor", seed, LIDAR)
        self.t["calibrated_sensor"].append({"token": self.cam_calib, "sensor_token": token("sensor", CAM),
                                            **camera.calibration()})
        self.t["calibrated_sensor"].append({"token": self.lidar_calib, "sensor_token": token("sensor", LIDAR),
                                            "translation": list(LIDAR_TRANSLATION),
                                            "rotation": [1.0, 0.0, 0.0, 0.0], "camera_intrinsic": []})

    def add_scene(self, plan: ScenePlan, motion: SceneMotion, fps: float, keyframe_every: int,
                  instance_token, weather_name: str) -> list[dict]:
        """Add one scene's records; returns the CAM_FRONT frames [{filename, is_key_frame, ...}] to render."""
        t, name = self.t, plan.name
        log_token = token("log", self.seed, name)
        scene_token = token("scene", self.seed, name)
        t["log"].append({"token": log_token, "logfile": f"{name}-log", "vehicle": "stage-synth-ego",
                         "date_captured": "2020-09-13", "location": self.map_name})
        keyframes = list(range(0, plan.n_frames, keyframe_every))
        sample_tokens = [token("sample", self.seed, name, f) for f in keyframes]
        for i, f in enumerate(keyframes):
            t["sample"].append({"token": sample_tokens[i], "timestamp": plan.timestamp_us(f, fps),
                                "prev": sample_tokens[i - 1] if i > 0 else "",
                                "next": sample_tokens[i + 1] if i + 1 < len(keyframes) else "",
                                "scene_token": scene_token})
        t["scene"].append({"token": scene_token, "log_token": log_token, "nbr_samples": len(keyframes),
                           "first_sample_token": sample_tokens[0], "last_sample_token": sample_tokens[-1],
                           "name": name, "description": f"synthetic {plan.split} scene, {weather_name}"})

        frames = []
        cam_tokens = [token("sample_data", self.seed, name, CAM, f) for f in range(plan.n_frames)]
        for f in range(plan.n_frames):
            ts = plan.timestamp_us(f, fps)
            key = f % keyframe_every == 0
            x, y, yaw = motion.ego[f]
            pose_token = token("ego_pose", self.seed, name, CAM, f)
            t["ego_pose"].append({"token": pose_token, "timestamp": ts, "rotation": yaw_quaternion(yaw),
                                  "translation": [float(x), float(y), 0.0]})
            folder = "samples" if key else "sweeps"
            filename = f"{folder}/{CAM}/{name}__{CAM}__{ts}.jpg"
            t["sample_data"].append({
                "token": cam_tokens[f], "sample_token": sample_tokens[-(-f // keyframe_every)],
                "ego_pose_token": pose_token, "calibrated_sensor_token": self.cam_calib, "timestamp": ts,
                "fileformat": "jpg", "is_key_frame": key, "height": self.camera.height, "width": self.camera.width,
                "filename": filename, "prev": cam_tokens[f - 1] if f > 0 else "",
                "next": cam_tokens[f + 1] if f + 1 < plan.n_frames else ""})
            frames.append({"frame": f, "filename": filename, "is_key_frame": key})

        lidar_tokens = [token("sample_data", self.seed, name, LIDAR, f) for f in keyframes]
        for i, f in enumerate(keyframes):
            ts = plan.timestamp_us(f, fps)
            x, y, yaw = motion.ego[f]
            pose_token = token("ego_pose", self.seed, name, LIDAR, f)
            t["ego_pose"].append({"token": pose_token, "timestamp": ts, "rotation": yaw_quaternion(yaw),
                                  "translation": [float(x), float(y), 0.0]})
            t["sample_data"].append({
                "token": lidar_tokens[i], "sample_token": sample_tokens[i], "ego_pose_token": pose_token,
                "calibrated_sensor_token": self.lidar_calib, "timestamp": ts, "fileformat": "pcd",
                "is_key_frame": True, "height": 0, "width": 0,
                "filename": f"samples/{LIDAR}/{name}__{LIDAR}__{ts}.pcd.bin",
                "prev": lidar_tokens[i - 1] if i > 0 else "",
                "next": lidar_tokens[i + 1] if i + 1 < len(keyframes) else ""})

        self._add_annotations(plan, motion, keyframes, sample_tokens, instance_token)
        return frames

    def _add_annotations(self, plan, motion, keyframes, sample_tokens, instance_token):
        K = self.camera.intrinsic
        tracks: dict[str, list[dict]] = {}
        for i, f in enumerate(keyframes):
            ego_xy = motion.ego[f, :2]
            cam_from_world = np.linalg.inv(world_from_camera(pose_matrix(*motion.ego[f])))
            for agent in motion.agents:
                x, y, yaw = agent.poses[f]
                dist = float(np.hypot(x - ego_xy[0], y - ego_xy[1]))
                if dist > ANNOTATION_RADIUS_M:
                    continue
                wlh = agent.size_wlh
                centre = [float(x), float(y), wlh[2] / 2]
                corners = box_corners(centre, wlh, yaw)
                corners_cam = corners @ cam_from_world[:3, :3].T + cam_from_world[:3, 3]
                inst = instance_token(agent.name)
                rec = {"token": token("sample_annotation", self.seed, plan.name, agent.name, f),
                       "sample_token": sample_tokens[i], "instance_token": inst,
                       "visibility_token": _visibility_token(corners_cam, K, self.camera.width, self.camera.height),
                       "attribute_tokens": [token("attribute", _attribute(agent, float(agent.speeds[f])))],
                       "translation": centre, "size": [float(v) for v in wlh], "rotation": yaw_quaternion(yaw),
                       "prev": "", "next": "",
                       "num_lidar_pts": int(max(1, round(4000.0 / (1.0 + dist) ** 1.5))),
                       "num_radar_pts": int(max(1, round(60.0 / (1.0 + dist) ** 0.8)))}
                tracks.setdefault(agent.name, []).append(rec)
        for agent in motion.agents:
            recs = tracks.get(agent.name)
            if not recs:
                continue
            for a, b in zip(recs[:-1], recs[1:]):
                a["next"], b["prev"] = b["token"], a["token"]
            self.t["sample_annotation"].extend(recs)
            self.t["instance"].append({"token": instance_token(agent.name),
                                       "category_token": token("category", agent.category),
                                       "nbr_annotations": len(recs), "first_annotation_token": recs[0]["token"],
                                       "last_annotation_token": recs[-1]["token"]})

    def add_map(self, mask_filename: str) -> None:
        self.t["map"].append({"token": token("map", self.seed, self.map_name), "category": "semantic_prior",
                              "filename": mask_filename, "log_tokens": [log["token"] for log in self.t["log"]]})

    def write(self, table_dir: Path) -> None:
        table_dir.mkdir(parents=True, exist_ok=True)
        for name in TABLES:
            (table_dir / f"{name}.json").write_text(json.dumps(self.t[name], indent=0))
