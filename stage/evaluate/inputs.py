"""Reading what is evaluated: rollout folders, autoencoder reconstructions, layout-source lists.

    <rollouts>/<variant>/<scene>/frames.npy   uint8 (T, H, W, 3) decoded generated frames (lossless)
    <rollouts>/<variant>/<scene>/meta.json    {"variant", "scene", "n_frames", "layout_source", "gt_frames"}
    <rollouts>/<variant>/<scene>/latents.safetensors   (optional, not scored: its header is checked)
    <reconstructions>/<scene>/frames.npy      uint8 (T, H, W, 3) ground truth encoded + decoded by our AE

Folders whose name starts with '.' or '_' are skipped (temporary names of writers that rename into place).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stage.errors import StageError
from stage.readback import field, load_npy, read_json, safetensors_header

RERUN_ROLLOUT = "re-run `stage rollout` for this scene (or remove its folder)"
RERUN_RECONSTRUCT = "re-run `stage reconstruct` for this scene"
RERUN_STEP = "re-run the step that writes it (stage rollout, or the autoencoder reconstruction)"


@dataclass
class Video:
    """One video to score: generated rollout or reconstruction. `frames` is memory-mapped."""

    name: str                 # scene name
    path: Path                # its frames.npy
    frames: np.ndarray
    gt_frames: int | None     # frames with ground truth (None = as many as the ground truth has)
    layout: list[str]         # per-frame layout source ("gt" or a forecaster name)


def _visible_dirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def load_frames(path: Path, fix: str = RERUN_STEP) -> np.ndarray:
    """uint8 (T, H, W, 3) frames, memory-mapped; StageError naming the file when it is missing or damaged."""
    if not path.is_file():
        raise StageError(f"{path} is missing; each scene folder must hold frames.npy (uint8 (T, H, W, 3)); {fix}")
    arr = load_npy(path, fix)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3 or len(arr) < 1:
        raise StageError(f"{path}: expected uint8 (T, H, W, 3) frames, got {arr.dtype} {arr.shape}. Frames must be "
                         "decoded, lossless uint8 RGB (never re-read from mp4 previews).")
    return arr


def parse_layout_source(value, n_frames: int, where: str) -> list[str]:
    """Per-frame labels from a per-frame list, a run-length list ([label, count] pairs or
    {"source"|"label"|"name": label, "frames"|"count"|"n"|"length": count} dicts) or one string.
    Shorter lists are padded with their last label; "unknown" when absent."""
    if value is None:
        return ["unknown"] * n_frames
    if isinstance(value, str):
        return [value] * n_frames
    labels: list[str] = []
    try:
        for item in value:
            if isinstance(item, str):
                labels.append(item)
            elif isinstance(item, (list, tuple)) and len(item) == 2:
                labels += [str(item[0])] * int(item[1])
            elif isinstance(item, dict):
                label = next(item[k] for k in ("source", "label", "name") if k in item)
                count = next(item[k] for k in ("frames", "count", "n", "length") if k in item)
                labels += [str(label)] * int(count)
            else:
                raise ValueError(f"unrecognised entry {item!r}")
    except (TypeError, ValueError, StopIteration) as exc:
        raise StageError(f"{where}: layout_source must be a per-frame list of labels or a run-length list "
                         f"([label, count] pairs); {exc}") from exc
    if not labels:
        return ["unknown"] * n_frames
    return (labels + [labels[-1]] * n_frames)[:n_frames]


def run_length(labels: list[str]) -> list[list]:
    """['gt', 'gt', 'f'] -> [['gt', 2], ['f', 1]]."""
    out: list[list] = []
    for label in labels:
        if out and out[-1][0] == label:
            out[-1][1] += 1
        else:
            out.append([label, 1])
    return out


def check_latents(path: Path, n_frames: int) -> None:
    """A rollout's latents.safetensors, when there, must read back and hold one latent per frame (it is not
    scored, but a damaged one means the folder is not what `stage rollout` wrote)."""
    if not path.exists():
        return
    _, shapes = safetensors_header(path, RERUN_ROLLOUT)
    if "latents" not in shapes or not shapes["latents"] or shapes["latents"][0] != n_frames:
        raise StageError(f"{path}: expected a 'latents' tensor of {n_frames} frames, found {shapes}; {RERUN_ROLLOUT}")


def find_rollouts(root: str | Path) -> dict[str, dict[str, Video]]:
    """{variant: {scene: Video}} of every variant folder under `root` (any set of variants)."""
    root = Path(root)
    if not root.is_dir():
        raise StageError(f"rollouts folder {root} does not exist; run `stage rollout` first or pass the folder "
                         "that holds <variant>/<scene>/frames.npy with --rollouts.")
    found: dict[str, dict[str, Video]] = {}
    for vdir in _visible_dirs(root):
        scenes = {}
        for sdir in _visible_dirs(vdir):
            meta_path = sdir / "meta.json"
            if not meta_path.is_file():
                raise StageError(f"{meta_path} is missing: {sdir} is not a complete rollout (meta.json is written "
                                 "with the frames). Re-run the rollout for this scene or remove the folder.")
            meta = read_json(meta_path, RERUN_ROLLOUT)
            gt_frames = None if meta.get("gt_frames") is None else field(meta, "gt_frames", meta_path, RERUN_ROLLOUT, int)
            frames = load_frames(sdir / "frames.npy", RERUN_ROLLOUT)
            check_latents(sdir / "latents.safetensors", len(frames))
            scenes[sdir.name] = Video(sdir.name, sdir / "frames.npy", frames, gt_frames,
                                      parse_layout_source(meta.get("layout_source"), len(frames), str(meta_path)))
        if scenes:
            found[vdir.name] = scenes
    if not found:
        raise StageError(f"{root} holds no rollouts: expected <variant>/<scene>/frames.npy + meta.json. Run "
                         "`stage rollout` first or point --rollouts at its output folder.")
    return found


def find_reconstructions(root: str | Path, scenes: list[str]) -> dict[str, Video]:
    """{scene: Video} of the autoencoder reconstructions of `scenes`."""
    root = Path(root)
    if not root.is_dir():
        raise StageError(f"reconstructions folder {root} does not exist; pass the folder holding <scene>/frames.npy "
                         "written by the autoencoder reconstruction step, or omit --reconstructions.")
    missing = [s for s in scenes if not (root / s / "frames.npy").is_file()]
    if missing:
        raise StageError(f"{root} lacks reconstructions of scenes {missing} ({root / missing[0] / 'frames.npy'}); "
                         "reconstruct every evaluated scene, or omit --reconstructions.")
    return {s: Video(s, root / s / "frames.npy", load_frames(root / s / "frames.npy", RERUN_RECONSTRUCT), None, [])
            for s in scenes}
