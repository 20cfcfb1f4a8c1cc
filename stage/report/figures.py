"""The report's figures, each a PNG: drift curves, frame strips (ground truth vs each variant), and
training-loss curves."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

STRIP_FRAMES = (1, 40, 120, 240, 360, 480, 600)  # 1-based, as the paper's project page counts


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, bbox_inches="tight")
    _plt().close(fig)
    return out


def drift_curves(segments_csv: Path, out: Path) -> Path | None:
    """Per-segment metrics against the segment's middle frame, one line per variant and metric panel."""
    df = pd.read_csv(segments_csv)
    if df.empty:
        return None
    metrics = [m for m in df["metric"].unique()]
    plt = _plt()
    ncols = min(3, len(metrics))
    nrows = -(-len(metrics) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.0 * nrows), squeeze=False)
    for ax in axes.flat[len(metrics):]:
        ax.set_visible(False)
    for ax, metric in zip(axes.flat, metrics):
        sub = df[df["metric"] == metric]
        for variant, g in sub.groupby("variant", sort=True):
            g = g.sort_values("segment_start")
            mid = (g["segment_start"] + g["segment_end"]) / 2
            style = "--" if variant in ("ground_truth", "ceiling") else "-"
            ax.plot(mid, g["value"], style, marker="o", ms=3, label=variant)
        ax.set_title(sub["name"].iloc[0].split("[")[0], fontsize=9)
        ax.set_xlabel("frame index", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, out)


def frame_strips(rollouts_dir: Path, gt_split_dir: Path, scene: str, variants: list[str], out: Path) -> Path:
    """Rows: ground truth, then each variant; columns: frames T = 1, 40, ..., 600."""
    from stage.data.scene_format import ExtractedScene

    gt = ExtractedScene(Path(gt_split_dir) / scene).frames
    rows = [("ground truth", gt)] + [(v, np.load(Path(rollouts_dir) / v / scene / "frames.npy", mmap_mode="r"))
                                     for v in variants]
    plt = _plt()
    fig, axes = plt.subplots(len(rows), len(STRIP_FRAMES), figsize=(1.9 * len(STRIP_FRAMES), 1.25 * len(rows)),
                             squeeze=False)
    for r, (label, frames) in enumerate(rows):
        for c, t in enumerate(STRIP_FRAMES):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if t - 1 < len(frames):
                ax.imshow(np.asarray(frames[t - 1]))
            else:
                ax.text(0.5, 0.5, "no frame", ha="center", va="center", fontsize=7, transform=ax.transAxes)
            if r == 0:
                ax.set_title(f"T = {t}", fontsize=8)
        axes[r][0].set_ylabel(label, fontsize=7)
    fig.suptitle(f"Frame strips, scene {scene}", fontsize=9)
    fig.tight_layout()
    return _save(fig, out)


def loss_curves(csvs: dict[str, Path], out: Path, smooth: int = 25) -> Path | None:
    """One panel per training run: the per-step loss and its running mean."""
    csvs = {k: v for k, v in csvs.items() if Path(v).is_file()}
    if not csvs:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(csvs), figsize=(3.4 * len(csvs), 2.8), squeeze=False)
    for ax, (label, path) in zip(axes[0], csvs.items()):
        df = pd.read_csv(path)
        ax.plot(df["step"], df["loss"], lw=0.5, alpha=0.4, color="tab:blue")
        ax.plot(df["step"], df["loss"].rolling(smooth, min_periods=1).mean(), lw=1.2, color="tab:blue")
        ax.set_title(label, fontsize=8)
        ax.set_xlabel("step", fontsize=7)
        ax.set_yscale("log")
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, out)


def rollout_scenes(rollouts_dir: Path) -> dict[str, list[str]]:
    """{variant: [scenes]} of the rollouts present (folders holding meta.json)."""
    out: dict[str, list[str]] = {}
    for meta in sorted(Path(rollouts_dir).glob("*/*/meta.json")):
        info = json.loads(meta.read_text())
        out.setdefault(info["variant"], []).append(info["scene"])
    return out
