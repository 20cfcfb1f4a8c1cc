"""The embedded procedural driving world, written as a complete nuScenes-format dataset.

    generate(config, out_dir[, workers=N]) -> summary dict; writes <out_dir>/<version>/*.json, samples/, sweeps/,
                                        maps/ (frames rendered by N processes; the same bytes for any N)
    ground_truth(config, scene_name) -> per-frame ego pose, camera calibration and every agent's box,
                                        straight from the generator (no files read)

Modules: road_network (street geometry, shared by map and renderer), trajectories (ego and agents),
scenery (buildings, weather), camera, render, world (deterministic plan and seeds), nuscenes_tables,
map_expansion.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from stage import config as config_mod
from stage import paths
from stage.atomic import replace_dir
from stage.data.synth.camera import pose_matrix
from stage.data.synth.map_expansion import write_map
from stage.data.synth.nuscenes_tables import NuScenesTables
from stage.data.synth.render import Renderer, agent_draw_boxes
from stage.data.synth.trajectories import SceneMotion
from stage.data.synth.world import World
from stage.errors import StageError

__all__ = ["generate", "ground_truth", "World", "scene_boxes"]


def scene_boxes(world: World, motion: SceneMotion, frame: int, with_agents: bool = True):
    """Everything drawn at one frame: boxes (M, 7) and colours (M, 3), buildings first."""
    b_boxes, b_cols = world.buildings
    if not with_agents or not motion.agents:
        return b_boxes, b_cols
    poses = np.array([a.poses[frame] for a in motion.agents])
    sizes = np.array([a.size_wlh for a in motion.agents])
    centres = np.column_stack([poses[:, :2], sizes[:, 2] / 2])
    a_boxes, a_cols = agent_draw_boxes(centres, sizes, poses[:, 2], np.array([a.colour for a in motion.agents]),
                                       [a.kind for a in motion.agents])
    return np.concatenate([b_boxes, a_boxes]), np.concatenate([b_cols, a_cols])


def _jpeg(rgb: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise StageError("JPEG encoding failed; check that opencv-python-headless is installed correctly")
    return buf.tobytes()


RENDER_CHUNK = 48  # frames per task of a rendering process: few enough tasks to keep the progress bar moving


_worker: dict = {}  # a rendering process's world, renderer and JPEG quality (set by _start_worker)


def _start_worker(synth: dict, world: World | None = None) -> None:
    cv2.setNumThreads(1)  # one core per rendering process
    world = world or World(synth)
    _worker.update(world=world, renderer=Renderer(world.net, world.camera, world.texture_seed),
                   quality=synth["jpeg_quality"])


def _render_chunk(task: tuple) -> int:
    """Render and write the frames of (motion, weather, [(frame, path), ...]); how many."""
    motion, weather, frames = task
    for frame, path in frames:
        boxes, colours = scene_boxes(_worker["world"], motion, frame)
        rgb = _worker["renderer"].render(motion.ego[frame], boxes, colours, weather)
        path.write_bytes(_jpeg(rgb, _worker["quality"]))
    return len(frames)


def _render(world: World, tables: NuScenesTables, synth: dict, tmp: Path, workers: int,
            progress: Callable[[int, int], None] | None) -> int:
    """Every scene's tables, then its frames rendered into tmp in chunks by `workers` processes (a frame depends
    only on its scene's motion and weather, so the bytes do not depend on the split); the number of frames."""
    tasks = []
    for plan in world.plans:
        motion, weather = world.scene(plan)
        frames = tables.add_scene(plan, motion, synth["camera_fps"], synth["keyframe_every"],
                                  lambda agent_name, plan=plan: world.instance_token(plan, agent_name),
                                  weather.name)
        todo = [(fr["frame"], tmp / fr["filename"]) for fr in frames]
        for _, path in todo:
            path.parent.mkdir(parents=True, exist_ok=True)
        tasks += [(motion, weather, todo[i:i + RENDER_CHUNK]) for i in range(0, len(todo), RENDER_CHUNK)]
    total, done = sum(len(t[2]) for t in tasks), 0
    pool = None
    if workers <= 1:
        _start_worker(synth, world)
        results = map(_render_chunk, tasks)
    else:  # spawned: a forked child could inherit a lock held by a thread of OpenCV or torch
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_start_worker, initargs=(synth,))
        results = pool.map(_render_chunk, tasks)
    try:
        for n in results:
            done += n
            if progress:
                progress(done, total)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return total


def generate(config: dict, out_dir, progress: Callable[[int, int], None] | None = None, workers: int = 1) -> dict:
    """Write the synthetic world of `config` (full pipeline config) to out_dir, atomically, its frames rendered by
    `workers` processes.

    progress(frames_done, frames_total) is called as rendered frames are written.
    """
    config = config_mod.validate(config, source="synth config")
    synth, version = config["synth"], config["dataset"]["version"]
    world = World(synth)
    out_dir = Path(out_dir).resolve()
    paths.output_dir(out_dir.parent)
    if out_dir.exists() and not out_dir.is_dir():
        raise StageError(f"--out {out_dir} is an existing file, not a folder; pass a folder path (or move the file away)")
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    started = time.time()
    try:
        _, mask_path = write_map(world.net, synth["map_name"], tmp)
        tables = NuScenesTables(world.seed, synth["map_name"], world.camera)
        total = _render(world, tables, synth, tmp, workers, progress)
        for rec in tables.t["sample_data"]:
            if rec["fileformat"] == "pcd":
                path = tmp / rec["filename"]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(b"")   # an empty point cloud: LIDAR_TOP exists so readers select by channel
        tables.add_map(str(mask_path.relative_to(tmp)))
        tables.write(tmp / version)
        splits = {"train": [p.name for p in world.plans if p.split == "train"],
                  "long": [p.name for p in world.plans if p.split == "long"]}
        (tmp / version / "splits.json").write_text(json.dumps(splits, indent=1))
        summary = {"out_dir": str(out_dir), "version": version, "map_name": synth["map_name"],
                   "n_scenes": len(world.plans), "n_camera_frames": total,
                   "n_samples": len(tables.t["sample"]), "n_annotations": len(tables.t["sample_annotation"]),
                   "n_instances": len(tables.t["instance"]), "splits": splits,
                   "seconds": round(time.time() - started, 1)}
        (tmp / version / "synth_summary.json").write_text(json.dumps({**summary, "seconds": None,
                                                                      "out_dir": None, "synth": synth}, indent=1))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # Swap into place only now: an interrupted run leaves no complete-looking dataset at out_dir.
    replace_dir(tmp, out_dir)
    return summary


def ground_truth(config: dict, scene_name: str) -> list[dict]:
    """The generator's own truth for one scene, per camera frame, recomputed without reading files.

    Each frame: frame_index, timestamp_us, is_key_frame, ego_pose (4x4 global from ego), camera
    ({translation, rotation, camera_intrinsic}, ego frame) and agents: every agent of the scene (also
    those beyond the 60 m annotation radius) as {instance_token, name, category, translation (box
    centre xyz, global), size (w, l, h), yaw, speed}; tables annotate those within 60 m of the ego on keyframes.
    """
    config = config_mod.validate(config, source="synth config")
    synth = config["synth"]
    world = World(synth)
    plan = world.plan(scene_name)
    motion, _ = world.scene(plan)
    calib = world.camera.calibration()
    out = []
    for f in range(plan.n_frames):
        agents = []
        for a in motion.agents:
            x, y, yaw = a.poses[f]
            w, l, h = a.size_wlh
            agents.append({"instance_token": world.instance_token(plan, a.name), "name": a.name,
                           "category": a.category, "translation": [float(x), float(y), h / 2],
                           "size": [w, l, h], "yaw": float(yaw), "speed": float(a.speeds[f])})
        out.append({"frame_index": f, "timestamp_us": plan.timestamp_us(f, synth["camera_fps"]),
                    "is_key_frame": f % synth["keyframe_every"] == 0,
                    "ego_pose": pose_matrix(*motion.ego[f]), "camera": calib, "agents": agents})
    return out
