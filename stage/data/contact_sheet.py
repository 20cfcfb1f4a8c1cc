"""A contact sheet of extracted scenes: camera frames, and the same frames with the HD-map and box
layouts drawn over them, so a person can check at a glance that layouts and images agree."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from stage.formats.scene import open_split


def overlay(frame: np.ndarray, hdmap: np.ndarray, boxmap: np.ndarray) -> np.ndarray:
    """The frame with every non-black condition pixel painted over it (boxes on top of the map)."""
    out = frame.copy()
    for cond in (hdmap, boxmap):
        mask = cond.any(axis=-1)
        out[mask] = cond[mask]
    return out


def contact_sheet(split_dir, out_png, n_scenes: int = 3, n_frames: int = 6) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenes = open_split(split_dir)[:n_scenes]
    fig, axes = plt.subplots(2 * len(scenes), n_frames, figsize=(2.2 * n_frames, 2.6 * len(scenes)),
                             squeeze=False)
    for s, scene in enumerate(scenes):
        times = np.linspace(0, len(scene) - 1, n_frames).round().astype(int)
        for c, t in enumerate(times):
            frame = np.asarray(scene.frames[t])
            axes[2 * s, c].imshow(frame)
            axes[2 * s + 1, c].imshow(overlay(frame, np.asarray(scene.hdmap[t]), np.asarray(scene.boxmap[t])))
            axes[2 * s, c].set_title(f"{scene.name}  t={t}", fontsize=7)
        axes[2 * s, 0].set_ylabel("camera", fontsize=7)
        axes[2 * s + 1, 0].set_ylabel("+ map & boxes", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"Extracted clips with layouts: {Path(split_dir).name}", fontsize=9)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_png.with_name(f".{out_png.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, out_png)
    return out_png
