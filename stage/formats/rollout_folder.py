"""The rollout folder: one generated stream (scene, seed) as `stage rollout` writes it and `stage evaluate`
and the report read it, plus the reconstructions folder, which holds the same frames file per scene.

    <root>/<variant>/<scene>/seed-<seed>/      one finished stream: stream_dir(<root>/<variant>, scene, seed)
        frames.npy            uint8 (T, H, W, 3) decoded frames, lossless (the file that is scored)
        meta.json             {"variant", "scene", "seed", "n_frames", "condition": "generated" | "real",
                               "batch": [stream ids "<scene>/seed-<seed>" generated together], "lanes",
                               "layout_source": per-frame "gt" / forecaster name, "layout_runs": [[source, start,
                               end), ...], "gt_frames", "forecaster", "checkpoint": {"path", "sha256"},
                               "config_hash", "num_steps", "htft", "settings" (the stream's identity), ...,
                               "strip_frames": the 1-based frame numbers strip.png shows}
        latents.safetensors   "latents" (T, C, h, w): the generated latents (not scored; its header is checked)
        video.mp4             H.264 preview (never scored)
        strip.png             the frames rollout.strip_frames (1-based, those that exist), side by side
        timings.json          per-frame seconds of the batch, frames/s per stream and of all streams, batch size,
                              peak memory (at every state checkpoint and at the end)
    <root>/<variant>/<scene>/.seed-<seed>.partial/   work_dir: the stream's folder while it runs, frames.npy
                              and latents.npy filled in place, state/ checkpoints (stage/rollout/state.py)
    <reconstructions>/<scene>/frames.npy   uint8 (T, H, W, 3) ground truth encoded + decoded by the
                              autoencoder (`stage reconstruct`)

meta.json is written last, then the work folder is renamed to the stream's folder: a stream folder that holds
meta.json is complete. meta.json carries no format version; its readers check each field they use. Folders
whose name starts with '.' or '_' are writers' temporary names and are never listed.

frames.npy (and latents.npy, in the work folder only) is created at full size up front and each frame is
written in place with pwrite (no memory map: resident pages of a growing map would count as process memory),
so a resumed run simply overwrites the frames after its state checkpoint and the generated latents of many
long streams stay on disk, not in memory.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from stage.atomic import replace_dir, write_text
from stage.errors import StageError
from stage.paths import remove_tree
from stage.readback import field, load_npy, read_json, safetensors_header

FRAMES = "frames.npy"
META = "meta.json"
LATENTS = "latents.safetensors"
VIDEO = "video.mp4"
STRIP = "strip.png"
TIMINGS = "timings.json"
LATENTS_WORK = "latents.npy"  # the generated latents while a stream runs; LATENTS when done
STATE = "state"               # the work folder's state checkpoints
SEED_DIR = re.compile(r"seed-(0|[1-9][0-9]*)")
LAYOUT = f"<variant>/<scene>/seed-<seed>/{FRAMES} + {META}"

RERUN_ROLLOUT = "re-run `stage rollout` for this stream (or remove its folder)"
RERUN_STEP = "re-run the step that writes it (stage rollout, or the autoencoder reconstruction)"
RESTART_FIX = "start the rollout over without --resume"


# ---- names and paths ----------------------------------------------------------------------------------
def stream_id(scene: str, seed) -> str:
    return f"{scene}/seed-{seed}"


def stream_dir(root: str | Path, scene: str, seed: int) -> Path:
    """The folder of stream (scene, seed) under a rollout root `<root>` = `<rollouts>/<variant>`."""
    return Path(root) / scene / f"seed-{seed}"


def work_dir(out: Path) -> Path:
    """The hidden sibling a stream's folder `out` is made in, renamed to `out` when complete."""
    return out.parent / f".{out.name}.partial"


def reconstruction_frames(root: str | Path, scene: str) -> Path:
    """The frames file of `scene` in a reconstructions folder."""
    return Path(root) / scene / FRAMES


# ---- writing ------------------------------------------------------------------------------------------
class ArrayFile:
    """A .npy of (T, ...) rows of one dtype, filled row by row. Opening an existing one (create=False, a
    resume) checks its header and size first: StageError (ending in `fix`) when it does not fit."""

    def __init__(self, path: Path, shape: tuple[int, ...], dtype, create: bool, fix: str = ""):
        self.fd = None
        self.path, self.shape, self.dtype = Path(path), tuple(shape), np.dtype(dtype)
        if create:
            arr = np.lib.format.open_memmap(self.path, mode="w+", dtype=self.dtype, shape=self.shape)
            del arr
        existing = load_npy(self.path, fix, dtype=self.dtype)
        if existing.shape != self.shape:
            raise StageError(f"{self.path}: holds frames of shape {existing.shape}, not {self.shape}; {fix}")
        self.offset = existing.offset
        del existing
        self.row_bytes = int(np.prod(self.shape[1:])) * self.dtype.itemsize
        self.fd = os.open(self.path, os.O_RDWR)

    def write(self, t: int, row: np.ndarray) -> None:
        if row.shape != self.shape[1:] or row.dtype != self.dtype:
            raise ValueError(f"frame {t}: expected {self.dtype} {self.shape[1:]}, got {row.dtype} {row.shape}")
        os.pwrite(self.fd, np.ascontiguousarray(row).tobytes(), self.offset + t * self.row_bytes)

    def write_rows(self, rows: np.ndarray) -> None:
        """Rows 0..len(rows)-1 at once (a resume puts back what its state checkpoint holds)."""
        if rows.shape[1:] != self.shape[1:] or len(rows) > self.shape[0]:
            raise ValueError(f"expected up to {self.shape[0]} rows of {self.shape[1:]}, got {rows.shape}")
        os.pwrite(self.fd, np.ascontiguousarray(rows, self.dtype).tobytes(), self.offset)

    def read(self, n: int) -> np.ndarray:
        """Rows 0..n-1, read into memory (one stream's, briefly, for a state checkpoint)."""
        rows = np.empty((n, *self.shape[1:]), self.dtype)
        if os.preadv(self.fd, [memoryview(rows).cast("B")], self.offset) != rows.nbytes:
            raise StageError(f"{self.path}: shorter than its header says; {RESTART_FIX}")
        return rows

    def close(self) -> None:
        if self.fd is not None:
            os.fsync(self.fd)
            os.close(self.fd)
            self.fd = None


class FrameFile(ArrayFile):
    """frames.npy of (T, H, W, 3) uint8 decoded frames."""

    def __init__(self, path: Path, n_frames: int, height: int, width: int, create: bool, fix: str = ""):
        super().__init__(path, (n_frames, height, width, 3), np.uint8, create, fix)


def open_work_files(work: Path, frame_shape: tuple, latent_shape: tuple, create: bool,
                    fix: str = "") -> tuple[FrameFile, ArrayFile]:
    """frames.npy and latents.npy (float32 (T, C, h, w)) of a work folder, created at full size or (a resume)
    checked."""
    n = frame_shape[0]
    frames = FrameFile(work / FRAMES, *frame_shape, create=create, fix=fix)
    latents = ArrayFile(work / LATENTS_WORK, (n, *latent_shape), "float32", create=create, fix=fix)
    return frames, latents


def write_json(path: Path, data) -> None:
    write_text(path, json.dumps(data, indent=1))


def run_lengths(labels: list[str]) -> list[list]:
    """meta.json's "layout_runs": ['gt', 'gt', 'f'] -> [['gt', 0, 2], ['f', 2, 3]], [source, start, end) per run."""
    out: list[list] = []
    for t, label in enumerate(labels):
        if out and out[-1][0] == label:
            out[-1][2] = t + 1
        else:
            out.append([label, t, t + 1])
    return out


def write_latents(path: Path, latents, meta: dict) -> None:
    """latents.safetensors: the tensor `latents` under "latents", `meta`'s values JSON-encoded in its header."""
    from stage.formats.tensor_file import save_tensors

    tmp = Path(path).with_name(f".{Path(path).name}.tmp")
    save_tensors({"latents": latents.detach().cpu().contiguous()}, tmp,
                 metadata={k: json.dumps(v) for k, v in meta.items()})
    os.replace(tmp, path)


def strip_indices(n_frames: int, strip_frames: list[int]) -> list[int]:
    """0-based indices of the 1-based strip frame numbers that exist."""
    return [f - 1 for f in strip_frames if 1 <= f <= n_frames]


def write_strip(path: Path, frames: np.ndarray, strip_frames: list[int], label: bool = True) -> list[int]:
    """Frames at the 1-based numbers `strip_frames` side by side, each labelled "T=<n>"; returns their numbers."""
    from PIL import Image, ImageDraw

    idx = strip_indices(len(frames), strip_frames)
    tiles = []
    for i in idx:
        img = Image.fromarray(np.asarray(frames[i]))
        if label:
            ImageDraw.Draw(img).text((2, 1), f"T={i + 1}", fill=(255, 255, 255))
        tiles.append(np.asarray(img))
    strip = np.concatenate(tiles, axis=1)
    tmp = Path(path).with_name(f".{Path(path).name}.tmp.png")
    Image.fromarray(strip).save(tmp)
    os.replace(tmp, path)
    return [i + 1 for i in idx]


def write_video(path: Path, frames, fps: float) -> None:
    """H.264 preview (imageio-ffmpeg's bundled ffmpeg) of an iterable of frames; frames.npy stays the lossless
    source."""
    import imageio.v2 as imageio

    tmp = Path(path).with_name(f".{Path(path).name}.tmp.mp4")
    writer = imageio.get_writer(tmp, fps=fps, codec="libx264", quality=8, macro_block_size=1,
                                ffmpeg_log_level="error", output_params=["-pix_fmt", "yuv420p"])
    try:
        for f in frames:
            writer.append_data(np.asarray(f))
    finally:
        writer.close()
    os.replace(tmp, path)


def write_stream_folder(work: Path, out: Path, meta: dict, timings: dict, strip_frames: list[int],
                        fps: float) -> None:
    """Turn a stream's finished work folder into the rollout folder `out`: latents.safetensors from the
    work latents, strip, video, timings, meta.json last (a folder with meta.json is complete), renamed."""
    import torch

    latents = torch.from_numpy(np.load(work / LATENTS_WORK))
    write_latents(work / LATENTS, latents,
                  {"scene": meta["scene"], "seed": meta["seed"], "variant": meta["variant"],
                   "layout_runs": meta["layout_runs"]})
    del latents
    (work / LATENTS_WORK).unlink()
    frames = np.load(work / FRAMES, mmap_mode="r")
    meta["strip_frames"] = write_strip(work / STRIP, frames, strip_frames)
    write_video(work / VIDEO, frames, fps)
    del frames
    write_json(work / TIMINGS, timings)
    write_json(work / META, meta)
    remove_tree(work / STATE, out.parent)
    replace_dir(work, out)  # work is out's sibling, so its parent exists


# ---- reading ------------------------------------------------------------------------------------------
def visible_dirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def list_streams(variant_dir: Path) -> Iterator[tuple[str, int, Path]]:
    """(scene, seed, folder) of every stream folder <variant_dir>/<scene>/seed-<seed>/, in name order;
    StageError for a folder that does not fit the layout."""
    for sdir in visible_dirs(variant_dir):
        if (sdir / FRAMES).exists() or (sdir / META).exists():
            raise StageError(f"{sdir}: frames directly in the scene folder (the one-run-per-scene layout); "
                             f"expected {LAYOUT}. Re-run `stage rollout`, which writes one folder per seed.")
        for seed_dir in visible_dirs(sdir):
            m = SEED_DIR.fullmatch(seed_dir.name)
            if not m:
                raise StageError(f"{seed_dir}: expected a folder named seed-<seed> (e.g. seed-0) under the "
                                 f"scene folder ({LAYOUT}); remove or rename it")
            yield sdir.name, int(m.group(1)), seed_dir


def load_frames(path: Path, fix: str = RERUN_STEP) -> np.ndarray:
    """uint8 (T, H, W, 3) frames, memory-mapped; StageError naming the file when it is missing or damaged."""
    if not path.is_file():
        raise StageError(f"{path} is missing; each video folder must hold {FRAMES} (uint8 (T, H, W, 3)); {fix}")
    arr = load_npy(path, fix)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3 or len(arr) < 1:
        raise StageError(f"{path}: expected uint8 (T, H, W, 3) frames, got {arr.dtype} {arr.shape}. Frames must be "
                         "decoded, lossless uint8 RGB (never re-read from mp4 previews).")
    return arr


def check_latents(path: Path, n_frames: int, fix: str = RERUN_ROLLOUT) -> None:
    """A rollout's latents.safetensors, when there, must read back and hold one latent per frame (it is not
    scored, but a damaged one means the folder is not what `stage rollout` wrote)."""
    if not path.exists():
        return
    _, shapes = safetensors_header(path, fix)
    if "latents" not in shapes or not shapes["latents"] or shapes["latents"][0] != n_frames:
        raise StageError(f"{path}: expected a 'latents' tensor of {n_frames} frames, found {shapes}; {fix}")


def read_meta(folder: Path, variant: str, scene: str, seed: int, fix: str = RERUN_ROLLOUT) -> dict:
    """The meta.json of the stream folder <variant>/<scene>/seed-<seed>/ `folder`; StageError when it is missing
    (the folder is not complete), damaged, or names another stream (the folder was moved)."""
    meta_path = folder / META
    if not meta_path.is_file():
        raise StageError(f"{meta_path} is missing: {folder} is not a complete rollout ({META} is written "
                         "last). Re-run the rollout for this stream or remove the folder.")
    meta = read_json(meta_path, fix)
    for key, want in (("variant", variant), ("scene", scene), ("seed", seed)):
        if key in meta and meta[key] != want:
            raise StageError(f"{meta_path}: field '{key}' is {meta[key]!r} but the folder is {variant}/{scene}/"
                             f"seed-{seed}; the folder was moved or copied: {fix}")
    return meta


def read_frames(folder: Path, meta: dict, fix: str = RERUN_ROLLOUT) -> np.ndarray:
    """The frames of the stream folder `folder` whose meta.json holds `meta`, memory-mapped; StageError when they
    or the latents do not read back or hold another number of frames than meta.json says."""
    meta_path = folder / META
    frames = load_frames(folder / FRAMES, fix)
    if meta.get("n_frames") is not None and field(meta, "n_frames", meta_path, fix, int) != len(frames):
        raise StageError(f"{folder / FRAMES}: holds {len(frames)} frames but {meta_path} says n_frames "
                         f"{meta['n_frames']}; {fix}")
    check_latents(folder / LATENTS, len(frames), fix)
    return frames


def read_finished(out: Path, fix: str) -> tuple[dict, dict, int, int | None]:
    """meta.json of the finished stream folder `out`, its "settings" (the identity the stream was made with),
    and the number of frames frames.npy and latents.safetensors hold; StageError when one does not read back."""
    meta_path = out / META
    meta = read_json(meta_path, fix)
    settings = field(meta, "settings", meta_path, fix, dict)
    frames = load_npy(out / FRAMES, fix, dtype="uint8", ndim=4)
    _, shapes = safetensors_header(out / LATENTS, fix)
    return meta, settings, len(frames), shapes.get("latents", [None])[0]
