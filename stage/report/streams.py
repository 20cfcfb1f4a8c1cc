"""Where the report finds one stream's files: the one place in the report that turns (variant, scene, seed)
into paths (through the rollout writer's own stream_dir).

    <results>/rollouts/<variant>/<scene>/seed-<seed>/frames.npy, video.mp4   `stage rollout`
    <results>/extracted/<long split>/<scene>/frames.npy                      ground truth (`stage extract`)

Scene names come from metrics.json (data), so they are checked as path components before use.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stage.data.scene_format import ExtractedScene
from stage.errors import StageError
from stage.evaluate.inputs import RERUN_ROLLOUT, load_frames, stream_id
from stage.paths import child, safe_name

FIX = "re-run `stage evaluate` on the rollouts it should report"
__all__ = ["stream_id", "rollout_folder", "rollout_frames", "rollout_video", "ground_truth_frames"]


def rollout_folder(rollouts: Path, variant: str, scene: str, seed: int) -> Path:
    from stage.rollout.streams import stream_dir  # the writer's own layout (imports torch: only when needed)

    where = Path(rollouts) / "metrics.json streams"
    folder = stream_dir(child(rollouts, variant, "variant", where, FIX), safe_name(scene, "scene", where, FIX),
                        int(seed))
    if not folder.is_dir():
        raise StageError(f"{folder} is missing: metrics.json scored stream {stream_id(scene, seed)} of {variant}, "
                         f"but its rollout folder is gone; {RERUN_ROLLOUT}")
    return folder


def rollout_frames(rollouts: Path, variant: str, scene: str, seed: int) -> np.ndarray:
    """uint8 (T, H, W, 3) decoded frames of one stream, memory-mapped."""
    return load_frames(rollout_folder(rollouts, variant, scene, seed) / "frames.npy", RERUN_ROLLOUT)


def rollout_video(rollouts: Path, variant: str, scene: str, seed: int) -> Path:
    """One stream's video.mp4 preview."""
    path = rollout_folder(rollouts, variant, scene, seed) / "video.mp4"
    if not path.is_file():
        raise StageError(f"{path} is missing (each rollout folder holds its video.mp4 preview); {RERUN_ROLLOUT}")
    return path


def ground_truth_frames(split: Path, scene: str) -> np.ndarray:
    """The recorded frames of a held-out scene (shorter than a rollout: the forecaster continues past them)."""
    return ExtractedScene(child(split, scene, "scene", Path(split), FIX)).frames
