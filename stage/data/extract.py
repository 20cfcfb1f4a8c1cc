"""Extract per-scene clips with 12 Hz layouts from a nuScenes-format dataset (docs/scene-format.md).

For each scene of a split: walk the camera's 12 Hz sample_data chain; resize each frame to cover the
output size keeping the aspect ratio, then centre-crop (the intrinsic follows); interpolate every
instance's box between its 2 Hz keyframe annotations (centre and size linear, rotation by slerp);
project boxes and map polylines into the camera; draw the HD-map and box-layout condition images.

Choices where nuScenes is silent (configurable where it matters, all recorded in meta.json):
- An instance annotated on only one of the two keyframes around a sweep is held at that keyframe's
  box for the half of the interval nearest to it, then dropped (it entered or left the annotated area).
- Sweeps before the first or after the last keyframe hold the nearest keyframe's boxes.
- The map is the z = 0 plane of the global frame (nuScenes zeroes ego z).
"""

from __future__ import annotations

import bisect
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from pyquaternion import Quaternion
from tqdm import tqdm

from stage import paths
from stage.data import nuscenes_source as source
from stage.data.geometry import (BOX_EDGES, box_corners, clip_segments_to_near_plane, interpolate_box, invert,
                                 pose_matrix, project, resize_crop_intrinsic, transform_points, yaw_of)
from stage.data.layout_drawing import (BOX_CLASS_COLOURS, MAP_CLASS_COLOURS, collect_map_polylines, draw_boxes,
                                       draw_hdmap)
from stage.errors import StageError
from stage.formats.scene import BOX_COLUMNS, SceneWriter, category_group, write_index

RESIZE_RULE = "scale to cover (height, width) keeping aspect (Lanczos), then centre-crop"


class KeyframeBoxes:
    """A scene's 2 Hz annotations, and the 12 Hz boxes interpolated between them."""

    def __init__(self, nusc, scene: dict):
        self.times, self.boxes, self.tokens = [], [], []
        token = scene["first_sample_token"]
        while token:
            if token in self.tokens:
                raise StageError(f"sample.json: the sample chain of scene {scene['name']} returns to sample {token} "
                                 "(its 'next' tokens form a loop); repair the table")
            sample = nusc.get("sample", token)
            anns = {}
            for ann_token in sample["anns"]:
                a = nusc.get("sample_annotation", ann_token)
                anns[a["instance_token"]] = {"translation": a["translation"], "size": a["size"],
                                             "rotation": a["rotation"], "category": a["category_name"]}
            self.times.append(sample["timestamp"])
            self.boxes.append(anns)
            self.tokens.append(token)
            token = sample["next"]

    def at(self, timestamp: int, sample_token: str, is_key_frame: bool) -> tuple[dict[str, dict], bool]:
        """Boxes at a camera timestamp: {instance_token: box}, and whether they were interpolated."""
        if is_key_frame:  # camera keyframes carry their own sample's annotations exactly
            return self.boxes[self.tokens.index(sample_token)], False
        j = bisect.bisect_right(self.times, timestamp) - 1
        if j < 0:
            return self.boxes[0], True
        if j == len(self.times) - 1:
            return self.boxes[-1], True
        t0, t1 = self.times[j], self.times[j + 1]
        alpha = (timestamp - t0) / (t1 - t0)
        a, b = self.boxes[j], self.boxes[j + 1]
        out = {}
        for inst in a.keys() | b.keys():
            if inst in a and inst in b:
                out[inst] = {**interpolate_box(a[inst], b[inst], alpha), "category": a[inst]["category"]}
            elif inst in a and alpha < 0.5:
                out[inst] = a[inst]
            elif inst in b and alpha >= 0.5:
                out[inst] = b[inst]
        return out, True


def box_rows(frame_index, boxes, interpolated, global_to_cam, K, hw, near):
    """Rows of the boxes table for one frame, and the camera-frame corners to draw."""
    rows, corners_cam, cat_ids = [], [], []
    h, w = hw
    for inst in sorted(boxes):
        b = boxes[inst]
        q = Quaternion(b["rotation"])
        centre = np.asarray(b["translation"], dtype=np.float64)
        corners = transform_points(global_to_cam, box_corners(centre, b["size"], q))
        c_cam = transform_points(global_to_cam, centre)
        cat_id = category_group(b["category"])
        # 2D extent from the near-clipped edges, so boxes crossing the camera plane still get one.
        edges = np.array(BOX_EDGES)
        ea, eb, keep = clip_segments_to_near_plane(corners[edges[:, 0]], corners[edges[:, 1]], near)
        visible, fraction, bbox = False, 0.0, (np.nan,) * 4
        if keep.any() and c_cam[2] > near:
            pts = project(K, np.concatenate([ea[keep], eb[keep]]))
            x0, y0 = pts.min(0)
            x1, y1 = pts.max(0)
            area = max(x1 - x0, 1e-6) * max(y1 - y0, 1e-6)
            inter = max(0.0, min(x1, w) - max(x0, 0)) * max(0.0, min(y1, h) - max(y0, 0))
            fraction = float(inter / area)
            visible = fraction > 0
            if visible:
                bbox = (x0, y0, x1, y1)
        with np.errstate(divide="ignore", invalid="ignore"):
            uv_c = project(K, c_cam) if c_cam[2] > 1e-6 else np.full(2, np.nan)
            uv = np.where(corners[:, 2:3] > 1e-6, project(K, corners), np.nan)
        row = {
            "frame_index": frame_index, "instance_token": inst, "category": b["category"], "category_id": cat_id,
            "interpolated": interpolated,
            "x": centre[0], "y": centre[1], "z": centre[2],
            "w": b["size"][0], "l": b["size"][1], "h": b["size"][2], "yaw": yaw_of(q),
            "qw": q.w, "qx": q.x, "qy": q.y, "qz": q.z,
            "cam_x": c_cam[0], "cam_y": c_cam[1], "cam_z": c_cam[2],
            "u": uv_c[0], "v": uv_c[1], "depth": c_cam[2], "visible": visible, "visible_fraction": fraction,
            "bbox_u0": bbox[0], "bbox_v0": bbox[1], "bbox_u1": bbox[2], "bbox_v1": bbox[3],
        }
        for i in range(8):
            row[f"corner{i}_u"], row[f"corner{i}_v"] = uv[i]
        rows.append(row)
        corners_cam.append(corners)
        cat_ids.append(cat_id)
    return rows, corners_cam, cat_ids


def _load_frame(dataroot: Path, filename: str, resized_wh, crop_xy, out_wh, scene_name: str) -> np.ndarray:
    path = dataroot / filename
    if Path(filename).is_absolute() or ".." in Path(filename).parts:
        raise StageError(f"sample_data.json: image file name {filename!r} of scene {scene_name} leaves the dataroot "
                         f"{dataroot}; file names there are relative to it (e.g. samples/CAM_FRONT/x.jpg)")
    if not path.is_file():
        raise StageError(f"image {path} of scene {scene_name} is missing; the dataset's image files are "
                         "incomplete (re-download the camera blobs or re-generate the dataset)")
    try:
        with Image.open(path) as img:
            img.draft("RGB", resized_wh)  # JPEG decodes at a reduced scale directly: much faster for 1600x900
            img = img.convert("RGB").resize(resized_wh, Image.Resampling.LANCZOS)
            ox, oy = crop_xy
            img = img.crop((ox, oy, ox + out_wh[0], oy + out_wh[1]))
            return np.asarray(img, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as exc:  # PIL's errors for files that are not (whole) images
        raise StageError(f"image {path} of scene {scene_name} cannot be decoded ({type(exc).__name__}: {exc}); "
                         "replace it with the dataset's original file") from exc


def extract_scene(nusc, nusc_map, scene: dict, cfg: dict, dataroot: Path, split_dir: Path, source_info: dict,
                  progress: bool = True):
    channel, near = cfg["channel"], cfg["near_plane_m"]
    out_wh, hw = (cfg["width"], cfg["height"]), (cfg["height"], cfg["width"])
    chain = source.camera_chain(nusc, scene, channel)
    cs = nusc.get("calibrated_sensor", chain[0]["calibrated_sensor_token"])
    if len(cs["camera_intrinsic"]) != 3:
        raise StageError(f"channel {channel} of scene {scene['name']} has no camera intrinsic; extract.channel "
                         "must name a camera (e.g. CAM_FRONT)")
    src_wh = (chain[0]["width"], chain[0]["height"])
    if out_wh[0] > src_wh[0] or out_wh[1] > src_wh[1]:
        raise StageError(f"extract.height x extract.width = {hw[0]}x{hw[1]} is larger than the source images "
                         f"({src_wh[1]}x{src_wh[0]}) of scene {scene['name']}; choose a size at most the source's")
    K, resized_wh, crop_xy = resize_crop_intrinsic(np.array(cs["camera_intrinsic"]), src_wh, out_wh)
    ego_poses = [nusc.get("ego_pose", sd["ego_pose_token"]) for sd in chain]
    ego_xy = np.array([p["translation"][:2] for p in ego_poses])
    polylines = collect_map_polylines(nusc_map, ego_xy.min(0), ego_xy.max(0), cfg["map_radius_m"])
    keyboxes = KeyframeBoxes(nusc, scene)

    frame_rows, all_boxes = [], []
    with SceneWriter(split_dir, scene["name"], len(chain), *hw) as writer:
        for i, (sd, ep) in enumerate(zip(tqdm(chain, desc=scene["name"], leave=False, unit="frame",
                                                     disable=not progress), ego_poses)):
            cs_i = cs if sd["calibrated_sensor_token"] == cs["token"] else \
                nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
            ego_to_global = pose_matrix(ep["translation"], ep["rotation"])
            global_to_cam = invert(ego_to_global @ pose_matrix(cs_i["translation"], cs_i["rotation"]))
            writer.arrays["frames"][i] = _load_frame(dataroot, sd["filename"], resized_wh, crop_xy, out_wh,
                                                     scene["name"])
            boxes, interpolated = keyboxes.at(sd["timestamp"], sd["sample_token"], sd["is_key_frame"])
            rows, corners, cat_ids = box_rows(i, boxes, interpolated, global_to_cam, K, hw, near)
            all_boxes += rows
            writer.arrays["boxmap"][i] = draw_boxes(hw, K, corners, cat_ids, near, cfg["line_width"])
            writer.arrays["hdmap"][i] = draw_hdmap(hw, K, global_to_cam, ego_xy[i], polylines,
                                                   cfg["map_radius_m"], near, cfg["line_width"])
            q = Quaternion(ep["rotation"])
            frame_rows.append({
                "frame_index": i, "timestamp_us": sd["timestamp"], "sample_data_token": sd["token"],
                "sample_token": sd["sample_token"], "is_key_frame": sd["is_key_frame"],
                "ego_x": ep["translation"][0], "ego_y": ep["translation"][1], "ego_z": ep["translation"][2],
                "ego_qw": q.w, "ego_qx": q.x, "ego_qy": q.y, "ego_qz": q.z, "ego_yaw": yaw_of(q),
                "n_boxes": len(rows),
            })
        stamps = np.array([sd["timestamp"] for sd in chain])
        meta = {
            "scene_name": scene["name"], "scene_token": scene["token"], "description": scene["description"],
            "source": source_info, "channel": channel,
            "location": nusc.get("log", scene["log_token"])["location"],
            "fps": float(1e6 / np.median(np.diff(stamps))) if len(stamps) > 1 else None,
            "height": hw[0], "width": hw[1], "intrinsic": K.tolist(),
            "camera_to_ego": {"translation": cs["translation"], "rotation": cs["rotation"]},
            "source_size_wh": list(src_wh), "resized_wh": list(resized_wh), "crop_xy": list(crop_xy),
            "resize_rule": RESIZE_RULE, "map_class_colours": MAP_CLASS_COLOURS,
            "box_class_colours": BOX_CLASS_COLOURS, "map_radius_m": cfg["map_radius_m"],
        }
        return writer.finish(meta, pd.DataFrame(frame_rows), pd.DataFrame(all_boxes, columns=list(BOX_COLUMNS)))


def extract(dataroot, version: str, split: str, out_dir, cfg: dict, progress: bool = True) -> dict:
    """Extract every scene of a split into out_dir (one folder per scene, index.json last)."""
    dataroot, out_dir = Path(dataroot), Path(out_dir)
    nusc = source.open_nuscenes(dataroot, version)
    scenes = source.select_scenes(nusc, dataroot, version, split, cfg["max_scenes"])
    for scene in scenes:  # names become folders under out_dir: every one is checked before anything is written
        paths.safe_name(scene["name"], "scene name", f"{dataroot / version / 'scene.json'} (scene token "
                        f"{scene['token']})", "rename the scene there and in the split list")
    maps = {}
    for scene in scenes:  # every map the split needs, checked before any work is done
        location = nusc.get("log", scene["log_token"])["location"]
        if location not in maps:
            maps[location] = source.open_map(dataroot, location)
    paths.output_dir(out_dir)
    (out_dir / "index.json").unlink(missing_ok=True)  # the split is incomplete until rewritten
    source_info = {"dataroot": str(dataroot), "version": version, "split": split}
    start, n_frames = time.time(), 0
    for scene in tqdm(scenes, desc=f"extract {split}", unit="scene", disable=not progress):
        location = nusc.get("log", scene["log_token"])["location"]
        n_frames += len(extract_scene(nusc, maps[location], scene, cfg, dataroot, out_dir, source_info, progress))
    info = {"source": source_info, "n_frames": n_frames, "height": cfg["height"], "width": cfg["width"],
            "channel": cfg["channel"], "seconds": round(time.time() - start, 2)}
    write_index(out_dir, [s["name"] for s in scenes], info)
    return {"scenes": len(scenes), **info}
