"""What a rollout folder holds (the format `stage evaluate` reads, docs in stage/rollout/__init__.py).

frames.npy is created at full size up front and each decoded frame is written in place with pwrite
(no memory map: resident pages of a growing map would count as process memory), so a resumed run
simply overwrites the frames after its state checkpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from stage.atomic import write_text
from stage.errors import StageError
from stage.readback import load_npy


class FrameFile:
    """frames.npy of (T, H, W, 3) uint8, filled frame by frame. Opening an existing one (create=False, a
    resume) checks its header and size first: StageError (ending in `fix`) when it does not fit."""

    def __init__(self, path: Path, n_frames: int, height: int, width: int, create: bool, fix: str = ""):
        self.fd = None
        self.path, self.shape = Path(path), (n_frames, height, width, 3)
        if create:
            arr = np.lib.format.open_memmap(self.path, mode="w+", dtype=np.uint8, shape=self.shape)
            del arr
        existing = load_npy(self.path, fix, dtype=np.uint8)
        if existing.shape != self.shape:
            raise StageError(f"{self.path}: holds frames of shape {existing.shape}, not {self.shape}; {fix}")
        self.offset = existing.offset
        del existing
        self.frame_bytes = height * width * 3
        self.fd = os.open(self.path, os.O_WRONLY)

    def write(self, t: int, frame: np.ndarray) -> None:
        if frame.shape != self.shape[1:] or frame.dtype != np.uint8:
            raise ValueError(f"frame {t}: expected uint8 {self.shape[1:]}, got {frame.dtype} {frame.shape}")
        os.pwrite(self.fd, np.ascontiguousarray(frame).tobytes(), self.offset + t * self.frame_bytes)

    def close(self) -> None:
        if self.fd is not None:
            os.fsync(self.fd)
            os.close(self.fd)
            self.fd = None


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
