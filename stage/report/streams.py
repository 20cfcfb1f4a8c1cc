"""Where the report finds one stream's files: the one place in the report that turns (variant, scene, seed)
into paths, through the artifacts' format modules.

    <results>/rollouts/<variant>/<scene>/seed-<seed>/   frames and mp4 preview (stage/formats/rollout_folder.py)
    <results>/extracted/<long split>/<scene>/           ground truth (`stage extract`, stage/formats/scene.py)

Scene names come from metrics.json (data), so they are checked as path components before use.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stage.errors import StageError
from stage.formats.rollout_folder import FRAMES, RERUN_ROLLOUT, VIDEO, load_frames, stream_dir, stream_id
from stage.formats.scene import ExtractedScene
from stage.paths import child, safe_name

FIX = "re-run `stage evaluate` on the rollouts it should report"
__all__ = ["stream_id", "rollout_folder", "rollout_frames", "rollout_video", "ground_truth_frames"]


def rollout_folder(rollouts: Path, variant: str, scene: str, seed: int) -> Path:
    where = Path(rollouts) / "metrics.json streams"
    folder = stream_dir(child(rollouts, variant, "variant", where, FIX), safe_name(scene, "scene", where, FIX),
                        int(seed))
    if not folder.is_dir():
        raise StageError(f"{folder} is missing: metrics.json scored stream {stream_id(scene, seed)} of {variant}, "
                         f"but its rollout folder is gone; {RERUN_ROLLOUT}")
    return folder


def rollout_frames(rollouts: Path, variant: str, scene: str, seed: int) -> np.ndarray:
    """uint8 (T, H, W, 3) decoded frames of one stream, memory-mapped."""
    return load_frames(rollout_folder(rollouts, variant, scene, seed) / FRAMES, RERUN_ROLLOUT)


def rollout_video(rollouts: Path, variant: str, scene: str, seed: int) -> Path:
    """One stream's mp4 preview."""
    path = rollout_folder(rollouts, variant, scene, seed) / VIDEO
    if not path.is_file():
        raise StageError(f"{path} is missing (each rollout folder holds its {VIDEO} preview); {RERUN_ROLLOUT}")
    return path


def ground_truth_frames(split: Path, scene: str) -> np.ndarray:
    """The recorded frames of a held-out scene (shorter than a rollout: the forecaster continues past them)."""
    return ExtractedScene(child(split, scene, "scene", Path(split), FIX)).frames
