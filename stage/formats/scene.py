"""The on-disk format of an extracted split (`stage extract`): its writer and its reader.

Documented for users in docs/scene-format.md. A split directory holds one folder per scene plus
`index.json`, written last; a scene folder is complete only when it is listed there and its `meta.json`
exists (folders are written under a temporary name and renamed into place). Format version 2
(FORMAT_VERSION, recorded in index.json and every meta.json; 2 added the bbox_* box columns): a reader
refuses an index of another version.

    <split_dir>/index.json            {"format_version", "scenes": [scene names in order], ...}
    <split_dir>/<scene>/meta.json     scene token/name, source dataset, size, fps, intrinsic, crop rule,
                                      format_version, n_frames
    <split_dir>/<scene>/frames.npy    uint8 (T, H, W, 3) RGB camera frames
    <split_dir>/<scene>/hdmap.npy     uint8 (T, H, W, 3) HD-map condition images (class-coloured lines)
    <split_dir>/<scene>/boxmap.npy    uint8 (T, H, W, 3) box-layout condition images (wireframes)
    <split_dir>/<scene>/frames.parquet  one row per frame (FRAME_COLUMNS)
    <split_dir>/<scene>/boxes.parquet   one row per (frame, box) (BOX_COLUMNS)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from stage import paths, readback
from stage.atomic import write_text
from stage.errors import StageError

FORMAT_VERSION = 2  # 2: bbox_* columns
ARRAYS = ("frames", "hdmap", "boxmap")

FRAME_COLUMNS = {
    "frame_index": "int64",
    "timestamp_us": "int64",
    "sample_data_token": "string",
    "sample_token": "string",
    "is_key_frame": "bool",
    "ego_x": "float64", "ego_y": "float64", "ego_z": "float64",
    "ego_qw": "float64", "ego_qx": "float64", "ego_qy": "float64", "ego_qz": "float64",
    "ego_yaw": "float64",
    "n_boxes": "int64",
}

BOX_COLUMNS = {
    "frame_index": "int64",
    "instance_token": "string",
    "category": "string",            # full nuScenes name, e.g. vehicle.car
    "category_id": "int64",          # index into CATEGORY_GROUPS (coarse class used for colours/tokens)
    "interpolated": "bool",          # False on keyframes, True on the 12 Hz frames in between
    # global frame (metres), nuScenes conventions: size is (width, length, height)
    "x": "float64", "y": "float64", "z": "float64",
    "w": "float64", "l": "float64", "h": "float64",
    "yaw": "float64",
    "qw": "float64", "qx": "float64", "qy": "float64", "qz": "float64",
    # camera frame (x right, y down, z forward)
    "cam_x": "float64", "cam_y": "float64", "cam_z": "float64",
    # image of the output resolution (pixels, after resize and crop)
    "u": "float64", "v": "float64",   # projected 3D centre
    "depth": "float64",              # cam_z of the centre
    "visible": "bool",               # centre in front of the camera and some of the box inside the image
    "visible_fraction": "float64",   # share of the projected box's 2D bounding rectangle inside the image
    # 2D extent of the box's edges clipped at the near plane (pixels, not clipped to the image); NaN when not
    # visible. Raw corners behind the camera have no projection, so use these for 2D size, not the corners.
    "bbox_u0": "float64", "bbox_v0": "float64", "bbox_u1": "float64", "bbox_v1": "float64",
    **{f"corner{i}_{a}": "float64" for i in range(8) for a in ("u", "v")},
}

# Coarse classes: colours for the condition images and category ids for box tokens. Order is part of
# the format (category_id indexes it).
CATEGORY_GROUPS = ("car", "truck", "bus", "trailer", "construction_vehicle", "pedestrian", "motorcycle",
                   "bicycle", "traffic_cone", "barrier", "other")


def category_group(name: str) -> int:
    """Map a nuScenes category name to its coarse class index."""
    table = [
        ("vehicle.car", "car"), ("vehicle.emergency", "car"), ("vehicle.truck", "truck"),
        ("vehicle.bus", "bus"), ("vehicle.trailer", "trailer"), ("vehicle.construction", "construction_vehicle"),
        ("human.pedestrian", "pedestrian"), ("vehicle.motorcycle", "motorcycle"), ("vehicle.bicycle", "bicycle"),
        ("movable_object.trafficcone", "traffic_cone"), ("movable_object.barrier", "barrier"),
    ]
    for prefix, group in table:
        if name.startswith(prefix):
            return CATEGORY_GROUPS.index(group)
    return CATEGORY_GROUPS.index("other")


@dataclass
class ExtractedScene:
    """Read access to one extracted scene; arrays are memory-mapped. A damaged file is refused naming it."""

    path: Path

    @property
    def fix(self) -> str:
        return f"re-run `stage extract` for the split {self.path.parent}"

    @property
    def meta_path(self) -> Path:
        return self.path / "meta.json"

    @property
    def meta(self) -> dict:
        return readback.read_json(self.meta_path, self.fix)

    @property
    def name(self) -> str:
        return self.path.name

    def array(self, name: str, mmap: bool = True) -> np.ndarray:
        if name not in ARRAYS:
            raise ValueError(f"unknown array {name!r}; one of {ARRAYS}")
        arr = readback.load_npy(self.array_path(name), self.fix, mmap=mmap, dtype=np.uint8, ndim=4)
        if arr.shape[-1] != 3:
            raise StageError(f"{self.array_path(name)}: shape {arr.shape} is not (T, H, W, 3); {self.fix}")
        return arr

    def array_path(self, name: str) -> Path:
        return self.path / f"{name}.npy"

    @property
    def frames(self) -> np.ndarray:
        return self.array("frames")

    @property
    def hdmap(self) -> np.ndarray:
        return self.array("hdmap")

    @property
    def boxmap(self) -> np.ndarray:
        return self.array("boxmap")

    def frame_table(self) -> pd.DataFrame:
        return readback.read_parquet(self.path / "frames.parquet", self.fix, FRAME_COLUMNS)

    def box_table(self) -> pd.DataFrame:
        return readback.read_parquet(self.path / "boxes.parquet", self.fix, BOX_COLUMNS)

    def __len__(self) -> int:
        return readback.field(self.meta, "n_frames", self.meta_path, self.fix, int)


def open_split(split_dir: str | Path) -> list[ExtractedScene]:
    """All complete scenes of an extracted split, in index order."""
    split_dir = Path(split_dir)
    index = split_dir / "index.json"
    if not index.is_file():
        raise StageError(
            f"{index} not found: {split_dir} is not a complete extracted split. Run `stage extract` "
            "(or the Snakemake rule `extract`) to create it."
        )
    fix = "re-run `stage extract`"
    data = readback.read_json(index, fix)
    if data.get("format_version") != FORMAT_VERSION:
        raise StageError(
            f"{index}: format_version {data.get('format_version')} but this code reads {FORMAT_VERSION}; "
            "re-run `stage extract`."
        )
    scenes = []
    for name in readback.field(data, "scenes", index, fix, list):
        p = paths.child(split_dir, name, "scene", index, fix)
        if not (p / "meta.json").is_file():
            raise StageError(f"{index} lists scene {name} but {p / 'meta.json'} is missing; re-run `stage extract`.")
        scenes.append(ExtractedScene(p))
    return scenes


def _typed(df: pd.DataFrame, columns: dict[str, str], what: str) -> pd.DataFrame:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: missing columns {missing}")
    return df[list(columns)].astype(columns)


class SceneWriter:
    """Writes one scene folder atomically: arrays are filled in place (memory-mapped) inside a temporary
    folder, which `finish` renames into place; `abort` removes it. Use as a context manager."""

    def __init__(self, split_dir: str | Path, name: str, n_frames: int, height: int, width: int):
        self.split_dir = paths.output_dir(split_dir)
        self.final = paths.child(self.split_dir, name, "scene", self.split_dir, "rename the scene")
        self.tmp = self.split_dir / f".{name}.tmp-{os.getpid()}"
        paths.remove_tree(self.tmp, self.split_dir)
        self.tmp.mkdir()
        self.n_frames = n_frames
        self.arrays = {key: np.lib.format.open_memmap(self.tmp / f"{key}.npy", mode="w+", dtype=np.uint8,
                                                       shape=(n_frames, height, width, 3)) for key in ARRAYS}

    def finish(self, meta: dict, frames: pd.DataFrame, boxes: pd.DataFrame) -> ExtractedScene:
        if len(frames) != self.n_frames:
            raise ValueError(f"frames table has {len(frames)} rows for {self.n_frames} frames")
        for arr in self.arrays.values():
            arr.flush()
        self.arrays = {}
        _typed(frames, FRAME_COLUMNS, "frames table").to_parquet(self.tmp / "frames.parquet", index=False)
        _typed(boxes, BOX_COLUMNS, "boxes table").to_parquet(self.tmp / "boxes.parquet", index=False)
        meta = {**meta, "format_version": FORMAT_VERSION, "n_frames": self.n_frames}
        (self.tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        paths.remove_tree(self.final, self.split_dir)
        os.replace(self.tmp, self.final)
        return ExtractedScene(self.final)

    def abort(self) -> None:
        self.arrays = {}
        paths.remove_tree(self.tmp, self.split_dir)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        if self.tmp.exists():
            self.abort()


def write_scene(split_dir: Path, name: str, meta: dict, arrays: dict[str, np.ndarray],
                frames: pd.DataFrame, boxes: pd.DataFrame) -> ExtractedScene:
    """Write a whole scene from in-memory arrays (uint8 (T, H, W, 3) each), atomically."""
    n, h, w = arrays["frames"].shape[:3]
    with SceneWriter(split_dir, name, n, h, w) as writer:
        for key in ARRAYS:
            arr = arrays[key]
            if arr.dtype != np.uint8 or arr.shape != (n, h, w, 3):
                raise ValueError(f"{key}: expected uint8 {(n, h, w, 3)}, got {arr.dtype} {arr.shape}")
            writer.arrays[key][:] = arr
        return writer.finish(meta, frames, boxes)


def write_index(split_dir: Path, scenes: list[str], info: dict) -> None:
    """The split's completeness marker, written last (temporary name, then rename)."""
    write_text(Path(split_dir) / "index.json",
               json.dumps({"format_version": FORMAT_VERSION, "scenes": scenes, **info}, indent=2, sort_keys=True))
