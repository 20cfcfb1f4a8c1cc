"""Videos for Snakemake's HTML report (`snakemake --report`): each variant's mp4 preview of one stream, copied
to <results>/videos/<variant>.mp4, and one side-by-side video of that stream (ground truth and every variant
in a grid, frame-synchronous, labelled) inside a self-contained HTML page. The report shows HTML results
inline but offers an mp4 only as a download, so the page is where the variants are watched together."""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

from stage.atomic import write_text
from stage.errors import StageError

BAR = 14  # pixels of the label bar above each tile
COLUMNS = 3


def copy_video(src: Path, dst: Path) -> Path:
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
    return dst


def _labelled(label: str, width: int, height: int, fill=(20, 20, 20)) -> np.ndarray:
    """A (height, width, 3) tile: `label` in white on `fill`."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), fill)
    ImageDraw.Draw(img).text((3, 1), label, fill=(255, 255, 255))
    return np.asarray(img)


def tiled_frames(rows: list[tuple[str, np.ndarray]]):
    """Yields the grid frame by frame, for as many frames as the longest row; a row that has ended shows
    a grey tile saying so (the ground truth ends where the recording does)."""
    h, w = rows[0][1].shape[1:3]
    for label, frames in rows:
        if frames.shape[1:3] != (h, w):
            raise StageError(f"{label}: frames are {frames.shape[1]}x{frames.shape[2]}, but {rows[0][0]} is {h}x{w}; "
                             "a side-by-side video needs every row at the generation resolution")
    n = max(len(f) for _, f in rows)
    bars = [_labelled(label, w, BAR) for label, _ in rows]
    ended = [_labelled(f"ended after frame {len(f)}", w, h, fill=(90, 90, 90)) for _, f in rows]
    cols = min(COLUMNS, len(rows))
    grid_rows = -(-len(rows) // cols)
    height, width = grid_rows * (h + BAR), cols * w
    canvas = np.zeros((height + height % 2, width + width % 2, 3), np.uint8)  # H.264 4:2:0 wants even sizes
    for t in range(n):
        for i, (_, frames) in enumerate(rows):
            y, x = (i // cols) * (h + BAR), (i % cols) * w
            canvas[y:y + BAR, x:x + w] = bars[i]
            canvas[y + BAR:y + BAR + h, x:x + w] = frames[t] if t < len(frames) else ended[i]
        yield canvas


def side_by_side(rows: list[tuple[str, np.ndarray]], out: Path, fps: float) -> Path:
    from stage.formats.rollout_folder import write_video

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_video(out, tiled_frames(rows), fps)
    return out


def video_page(mp4: Path, out: Path, title: str, caption: str) -> Path:
    """An HTML page holding the video itself (a data URI): it plays inside Snakemake's single-file report."""
    data = base64.b64encode(Path(mp4).read_bytes()).decode("ascii")
    return write_text(out, f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{escape(title)}</title>"
                           "</head><body style=\"font-family:sans-serif;font-size:13px\">"
                           f"<h3>{escape(title)}</h3><video controls autoplay muted loop playsinline "
                           f"style=\"max-width:100%\" src=\"data:video/mp4;base64,{data}\"></video>"
                           f"<p>{escape(caption)}</p></body></html>\n")
