"""Small fabricated road scenes in the extracted-scene format, written with the product's scene writer.

Not the embedded world (that is `stage synth` + `stage extract`): just enough structure (sky, road,
dashed lane markings, coloured vehicles with boxes) to exercise the autoencoder, the cache and the
datasets without the rest of the pipeline.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from stage.formats.scene import BOX_COLUMNS, CATEGORY_GROUPS, write_index, write_scene

_LANE_COLOUR = (255, 255, 255)
_MAP_COLOURS = {"divider": (255, 200, 0), "edge": (0, 160, 255)}


def _road_x(v: np.ndarray, width: int, horizon: int, offset: float) -> tuple[np.ndarray, np.ndarray]:
    """Left and right road edges (pixels) at image rows v."""
    depth = np.clip((v - horizon) / max(1, 128 - horizon), 0, None)
    half = 0.05 * width + 0.55 * width * depth
    centre = width / 2 + offset * depth
    return centre - half, centre + half


def fabricate_scene(n_frames: int, height: int = 128, width: int = 224, seed: int = 0,
                    n_cars: int = 3) -> tuple[dict[str, np.ndarray], pd.DataFrame, pd.DataFrame]:
    """Arrays (frames, hdmap, boxmap) and frame/box tables of one moving road scene."""
    rng = np.random.default_rng(seed)
    horizon = height * 2 // 5
    vv, uu = np.mgrid[0:height, 0:width].astype(np.float32)
    sky_top, sky_bottom = rng.uniform(120, 200, 3), rng.uniform(180, 250, 3)
    grass = rng.uniform(40, 120, 3) * np.array([0.6, 1.0, 0.5])
    texture = rng.normal(0, 6, (height, width, 1)).astype(np.float32)
    cars = [dict(lane=rng.choice([-0.25, 0.0, 0.25]), dist=rng.uniform(0.15, 0.9), speed=rng.uniform(-0.01, 0.01),
                 colour=rng.uniform(30, 230, 3), cat=int(rng.integers(0, 3))) for _ in range(n_cars)]
    frames = np.zeros((n_frames, height, width, 3), np.uint8)
    hdmap = np.zeros_like(frames)
    boxmap = np.zeros_like(frames)
    rows, boxes = [], []
    for t in range(n_frames):
        offset = 25 * np.sin(0.05 * t + seed)
        left, right = _road_x(vv, width, horizon, offset)
        img = np.zeros((height, width, 3), np.float32)
        s = np.clip(vv / horizon, 0, 1)[..., None]
        img[:] = sky_top * (1 - s) + sky_bottom * s
        below = vv >= horizon
        img[below] = grass
        road = below & (uu >= left) & (uu <= right)
        img[road] = (95, 95, 100)
        # dashed centre markings and solid edge lines, scrolling towards the camera
        depth = np.clip((vv - horizon) / (height - horizon), 1e-3, None)
        centre = (left + right) / 2
        lw = 0.5 + 3 * depth
        dash = (np.floor(1.0 / depth * 2 + 0.4 * t) % 2) == 0
        divider = below & (np.abs(uu - centre) < lw) & dash
        edges = below & ((np.abs(uu - left) < lw) | (np.abs(uu - right) < lw))
        img[divider | edges] = _LANE_COLOUR
        hd = np.zeros_like(img)
        hd[below & (np.abs(uu - centre) < 0.8)] = _MAP_COLOURS["divider"]
        hd[below & ((np.abs(uu - left) < 0.8) | (np.abs(uu - right) < 0.8))] = _MAP_COLOURS["edge"]
        bm = np.zeros_like(img)
        for i, car in enumerate(cars):
            d = float(np.clip(car["dist"] + car["speed"] * t, 0.1, 0.95))
            vb = horizon + d * (height - horizon)
            l_, r_ = _road_x(np.array([vb]), width, horizon, offset)
            cx = float((l_ + r_)[0] / 2 + car["lane"] * (r_ - l_)[0])
            w2, h2 = 4 + 40 * d, 3 + 28 * d
            x0, x1, y0, y1 = int(cx - w2 / 2), int(cx + w2 / 2), int(vb - h2), int(vb)
            x0c, x1c, y0c, y1c = max(x0, 0), min(x1, width), max(y0, 0), min(y1, height)
            if x1c > x0c and y1c > y0c:
                img[y0c:y1c, x0c:x1c] = car["colour"]
                img[y0c:y0c + max(1, (y1c - y0c) // 3), x0c:x1c] = car["colour"] * 0.35
                bm[y0c:y1c, x0c] = bm[y0c:y1c, x1c - 1] = bm[y0c, x0c:x1c] = bm[y1c - 1, x0c:x1c] = (255, 0, 0)
            dep = 3 + 60 * (1 - d)
            row = {c: 0.0 for c, dt in BOX_COLUMNS.items() if dt == "float64"}
            row.update(frame_index=t, instance_token=f"inst{i}", category=f"vehicle.{CATEGORY_GROUPS[car['cat']]}",
                       category_id=car["cat"], interpolated=t % 6 != 0, u=cx, v=vb - h2 / 2, depth=dep,
                       cam_z=dep, visible=True, visible_fraction=1.0, w=1.8, l=4.5, h=1.6)
            for k, (cu, cv) in enumerate([(x0, y0), (x1, y0), (x1, y1), (x0, y1)] * 2):
                row[f"corner{k}_u"], row[f"corner{k}_v"] = float(cu), float(cv)
            row.update(bbox_u0=float(x0), bbox_v0=float(y0), bbox_u1=float(x1), bbox_v1=float(y1))
            boxes.append(row)
        img += texture * below[..., None]
        frames[t] = np.clip(img, 0, 255).astype(np.uint8)
        hdmap[t] = hd.astype(np.uint8)
        boxmap[t] = bm.astype(np.uint8)
        rows.append(dict(frame_index=t, timestamp_us=t * 83333, sample_data_token=f"sd{seed}_{t}",
                         sample_token=f"s{seed}_{t // 6}", is_key_frame=t % 6 == 0, ego_x=float(t), ego_y=0.0,
                         ego_z=0.0, ego_qw=1.0, ego_qx=0.0, ego_qy=0.0, ego_qz=0.0, ego_yaw=0.0, n_boxes=n_cars))
    return ({"frames": frames, "hdmap": hdmap, "boxmap": boxmap}, pd.DataFrame(rows),
            pd.DataFrame(boxes, columns=list(BOX_COLUMNS)))


def fabricate_split(split_dir: str | Path, n_scenes: int = 2, n_frames: int = 12, height: int = 128,
                    width: int = 224, seed: int = 0) -> Path:
    """Write `n_scenes` fabricated scenes plus index.json; returns the split directory."""
    split_dir = Path(split_dir)
    names = []
    for i in range(n_scenes):
        arrays, frames, boxes = fabricate_scene(n_frames, height, width, seed=seed + i)
        name = f"scene-{i:04d}"
        meta = {"scene_name": name, "source": "fabricated", "height": height, "width": width, "fps": 12.0}
        write_scene(split_dir, name, meta, arrays, frames, boxes)
        names.append(name)
    write_index(split_dir, names, {"source": "fabricated"})
    return split_dir
