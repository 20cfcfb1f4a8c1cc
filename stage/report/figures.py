"""The report's figures, each a PNG readable at a glance: drift curves per metric (variants with their 95%
interval bands, baselines as grey dashed lines), time to collapse per stream, a frame strip of one stream
(ground truth and every variant), the training-loss curves and the noise levels trained on against the
ones sampled at."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from stage.errors import StageError
from stage.formats.metrics import BASELINE_LABELS, FIX, SEGMENT_SUMMARY, higher_is_better

# Baselines: grey or black, each its own dash pattern, so they read as references and not as models.
BASELINE_STYLE = {"still_photograph": dict(color="0.35", ls="--", lw=1.6),
                  "persistence": dict(color="0.55", ls=":", lw=1.8),
                  "ceiling": dict(color="black", ls="-.", lw=1.3),
                  "real_floor": dict(color="0.7", ls=(0, (6, 2, 1, 2, 1, 2)), lw=1.3)}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: Path) -> Path:
    """Written beside the target under a hidden name, then renamed: never a half-written PNG."""
    import os

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    _plt().close(fig)
    os.replace(tmp, out)
    return out


def read_segments(path: Path) -> pd.DataFrame:
    """results/evaluation/segments.csv: per-segment mean and 95% interval of every variant and baseline."""
    if not Path(path).is_file():
        raise StageError(f"{path} is missing; {FIX}")
    try:
        df = pd.read_csv(path)
    except (ValueError, UnicodeDecodeError) as exc:
        raise StageError(f"{path}: not a readable CSV table ({' '.join(str(exc).split())[:120]}); {FIX}") from exc
    missing = [c for c in SEGMENT_SUMMARY if c not in df.columns]
    if missing:
        raise StageError(f"{path}: lacks the columns {missing}; {FIX}")
    for c in ("segment_start", "segment_end", "mean", "ci_low", "ci_high"):
        df[c] = pd.to_numeric(df[c], errors="coerce")  # blanks and inf (real vs real PSNR) are not drawn
    return df.replace([np.inf, -np.inf], np.nan)


def drift_curves(segments: pd.DataFrame, metric: str, kinds: dict[str, str], out: Path, horizon: int) -> Path:
    """`metric` per segment against the frame index: one line per variant with its 95% band, the baselines
    as labelled grey lines. `kinds` maps each row of metrics.json to its kind (generated or a baseline)."""
    sub = segments[(segments["metric"] == metric) & segments["variant"].isin(list(kinds))]
    if sub["mean"].notna().sum() == 0:
        raise StageError(f"segments.csv has no {metric} values for the variants of metrics.json; {FIX}")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    colors = iter(plt.get_cmap("tab10").colors)
    for name, kind in kinds.items():
        g = sub[sub["variant"] == name].dropna(subset=["mean"]).sort_values("segment_start")
        if g.empty:
            continue
        mid = (g["segment_start"] + g["segment_end"] - 1) / 2
        if kind == "generated":
            color = next(colors)
            ax.plot(mid, g["mean"], "-", marker="o", ms=3, lw=1.6, color=color, label=name)
            ax.fill_between(mid, g["ci_low"], g["ci_high"], color=color, alpha=0.18, lw=0)
        else:
            ax.plot(mid, g["mean"], label=BASELINE_LABELS.get(kind, name), **BASELINE_STYLE.get(kind, {}))
    better = "higher" if higher_is_better(metric) else "lower"
    ax.set_title(f"{metric} per segment ({better} is better); bands: 95% interval over streams", fontsize=9)
    ax.set_xlabel("frame", fontsize=8)
    ax.set_ylabel(metric, fontsize=8)
    ax.set_xlim(0, max(horizon, int(sub["segment_end"].max())))
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _save(fig, out)


def collapse_strip(points: dict[str, list[tuple[int, bool]]], horizon: int, out: Path) -> Path:
    """Time to collapse: one row per variant, one marker per stream (filled: collapsed there; hollow at the
    rollout length: no collapse)."""
    plt = _plt()
    names = list(points)
    fig, ax = plt.subplots(figsize=(7.5, 0.55 * len(names) + 1.3))
    colors = plt.get_cmap("tab10").colors
    for row, name in enumerate(names):
        pts = points[name]
        jitter = np.linspace(-0.22, 0.22, len(pts)) if len(pts) > 1 else np.zeros(len(pts))
        for (t, collapsed), dy in zip(pts, jitter):
            ax.plot(min(t, horizon), row + dy, "o", ms=6, color=colors[row % 10],
                    mfc=colors[row % 10] if collapsed else "none", mew=1.4)
        hit = sum(c for _, c in pts)
        ax.text(horizon * 1.03, row, f"{hit} of {len(pts)} collapsed", va="center", fontsize=7)
    ax.axvline(horizon, color="0.4", ls="--", lw=1)
    ax.text(horizon, -0.62, f"no collapse (rollout length {horizon})", ha="center", va="bottom", fontsize=7,
            color="0.3")
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_ylim(len(names) - 0.5, -0.9)  # first variant on top, room above it for the label
    ax.set_xlim(0, horizon * 1.25)
    ax.set_xlabel("time to collapse (frames); hollow marker: did not collapse", fontsize=8)
    ax.set_title("Time to collapse, one marker per stream", fontsize=9)
    ax.tick_params(labelsize=7)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, out)


def frame_strips(rows: list[tuple[str, np.ndarray]], strip_frames: list[int], title: str, out: Path) -> Path:
    """Rows: (label, frames) such as ground truth then each variant; columns: the 1-based frame numbers."""
    plt = _plt()
    fig, axes = plt.subplots(len(rows), len(strip_frames), figsize=(1.9 * len(strip_frames), 1.25 * len(rows)),
                             squeeze=False)
    for r, (label, frames) in enumerate(rows):
        for c, t in enumerate(strip_frames):
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
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, out)


def loss_curves(csvs: dict[str, Path], out: Path, smooth: int = 25) -> Path | None:
    """One panel per training run: the per-step loss and its running mean."""
    csvs = {k: v for k, v in csvs.items() if Path(v).is_file()}
    if not csvs:
        return None
    plt = _plt()
    ncols = min(4, len(csvs))  # wrapped, so that eleven runs stay readable on one page
    nrows = -(-len(csvs) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 2.6 * nrows), squeeze=False)
    for ax in axes.flat[len(csvs):]:
        ax.set_visible(False)
    for ax, (label, path) in zip(axes.flat, csvs.items()):
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


def noise_levels(diffusion_cfg: dict, num_steps: int, out: Path) -> Path:
    """Density of the training sigmas (log-normal: ln sigma ~ N(p_mean, p_std^2)) over ln sigma, with the
    sampler's sigmas marked: a sampling step far in the density's tail meets a denoiser that rarely trained there."""
    import math

    from stage.model.sampler import step_sigmas

    plt = _plt()
    mu, sd = diffusion_cfg["p_mean"], diffusion_cfg["p_std"]
    sig = step_sigmas(diffusion_cfg, num_steps).numpy()
    lo = min(np.log(diffusion_cfg["sigma_min"]), mu - 4 * sd)
    hi = max(np.log(diffusion_cfg["sigma_max"]), mu + 4 * sd)
    x = np.linspace(lo, hi, 400)
    fig, ax = plt.subplots(figsize=(6.4, 2.8))
    ax.fill_between(x, np.exp(-0.5 * ((x - mu) / sd) ** 2) / (sd * np.sqrt(2 * np.pi)), color="tab:blue", alpha=0.3,
                    label=f"training: ln sigma ~ N({mu:g}, {sd:g}^2)")
    for i, s in enumerate(sig):
        share = 0.5 * (1 + math.erf((np.log(s) - mu) / (sd * np.sqrt(2))))  # training mass below this level
        ax.axvline(np.log(s), color="tab:red", lw=1.2, label="sampler steps" if i == 0 else None)
        ax.annotate(f"{s:.3g}\n{100 * min(share, 1 - share):.1f}%", (np.log(s), ax.get_ylim()[1] * 0.92),
                    fontsize=6, ha="center", va="top", color="tab:red")
    ax.set_xlabel("ln sigma (labels: sigma, training share beyond it)", fontsize=8)
    ax.set_ylabel("density", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, loc="center left")
    ax.grid(alpha=0.3)
    return _save(fig, out)
