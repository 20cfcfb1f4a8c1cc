"""What a rollout folder holds (the format `stage evaluate` reads, docs in stage/rollout/__init__.py).

frames.npy (and, in the work folder only, latents.npy) is created at full size up front and each frame
is written in place with pwrite (no memory map: resident pages of a growing map would count as process
memory), so a resumed run simply overwrites the frames after its state checkpoint and the generated
latents of many long streams stay on disk, not in memory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from stage.atomic import replace_dir, write_text
from stage.errors import StageError
from stage.paths import remove_tree
from stage.readback import load_npy

RESTART_FIX = "start the rollout over without --resume"
LATENTS_WORK = "latents.npy"  # the generated latents while a stream runs; latents.safetensors when done


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


def write_json(path: Path, data) -> None:
    write_text(path, json.dumps(data, indent=1))


def run_lengths(labels: list[str]) -> list[list]:
    """['gt', 'gt', 'f'] -> [['gt', 0, 2], ['f', 2, 3]]: [source, start, end) per run."""
    out: list[list] = []
    for t, label in enumerate(labels):
        if out and out[-1][0] == label:
            out[-1][2] = t + 1
        else:
            out.append([label, t, t + 1])
    return out


def write_latents(path: Path, latents: torch.Tensor, meta: dict) -> None:
    tmp = Path(path).with_name(f".{Path(path).name}.tmp")
    save_file({"latents": latents.detach().cpu().contiguous()}, str(tmp),
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


def write_video(path: Path, frames: np.ndarray, fps: float) -> None:
    """H.264 preview (imageio-ffmpeg's bundled ffmpeg); frames.npy stays the lossless source."""
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
    latents = torch.from_numpy(np.load(work / LATENTS_WORK))
    write_latents(work / "latents.safetensors", latents,
                  {"scene": meta["scene"], "seed": meta["seed"], "variant": meta["variant"],
                   "layout_runs": meta["layout_runs"]})
    del latents
    (work / LATENTS_WORK).unlink()
    frames = np.load(work / "frames.npy", mmap_mode="r")
    meta["strip_frames"] = write_strip(work / "strip.png", frames, strip_frames)
    write_video(work / "video.mp4", frames, fps)
    del frames
    write_json(work / "timings.json", timings)
    write_json(work / "meta.json", meta)
    remove_tree(work / "state", out.parent)
    replace_dir(work, out)  # work is out's sibling, so its parent exists
