"""Streaming-rollout cost: frames/s, peak memory at 60 / 600 / 1200 frames, early vs late time per frame.

One 1200-frame rollout of the embedded default model (random weights: the cost does not depend on them)
on the first long scene of results/extracted/long with the map of results/world (625 recorded frames,
the rest from the lane_follow forecaster), with an untrained embedded autoencoder of the default
architecture and its latent cache built on the fly. Without those results it falls back to the tiny
synthetic world (generated here) at the same 128x224 resolution. Prints the ratios last; targets:
memory 1200/60 <= 1.05, late/early time per frame <= 1.1.

    .venv/bin/python benchmarks/rollout.py [--frames 1200] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def single_scene_split(src: Path, dst: Path) -> Path:
    """A split folder holding only the first scene of `src` (linked, not copied)."""
    from stage.data.scene_format import open_split, write_index

    scene = open_split(src)[0]
    dst.mkdir(parents=True, exist_ok=True)
    os.symlink(scene.path.resolve(), dst / scene.name)
    write_index(dst, [scene.name], {"source": str(src)})
    return dst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=1200)
    ap.add_argument("--keep", type=Path, help="work here and keep the rollout (default: a temporary folder)")
    args = ap.parse_args()
    torch.set_num_threads(1)  # shared 2-core box: two threads make small forwards far slower

    from stage import config as config_mod
    from stage.latents.autoencoder import load_codec
    from stage.latents.cache import LatentCache
    from stage.rollout import rollout
    from stage.rollout.loading import load_for_rollout
    from stage.rollout.toy import make_rollout_inputs

    cfg = config_mod.default()
    cfg["rollout"]["checkpoint_every"] = 60
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-rollout-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    data, world = ROOT / "results" / "extracted" / "long", ROOT / "results" / "world"
    if (data / "index.json").is_file() and (world / "maps").is_dir():
        paths = make_rollout_inputs(work, world, cfg, data_dir=single_scene_split(data, work / "split"))
        source = f"{data} (first scene), map {world}"
    else:
        from stage.data.synth import generate
        generate({"synth": {"n_train_scenes": 1, "n_long_scenes": 1, "long_scene_seconds": 10.0}}, work / "world")
        paths = make_rollout_inputs(work, work / "world", cfg)
        source = "generated synthetic world (10 s long scene)"
    codec = load_codec(cfg["autoencoder"], paths["autoencoder"])
    model, conditions, info = load_for_rollout(paths["checkpoint"], cfg)
    print(f"setup {time.time() - t0:.0f} s: {source}; scene {paths['scene']}; embedded default model "
          f"(random weights, {cfg['diffusion']['num_steps']} steps, HTFT {model.htft_enabled}), "
          f"{cfg['extract']['height']}x{cfg['extract']['width']}, torch threads 1", flush=True)

    result = rollout(model, conditions, codec, LatentCache(paths["cache"]), paths["scene"],
                     work / "rollouts" / "bench" / paths["scene"], cfg, variant="bench", data_dir=paths["data"],
                     dataroot=paths["dataroot"], n_frames=args.frames, checkpoint_info=info)
    t, meta = result["timings"], result["meta"]
    per = np.array(t["per_frame_s"])
    mem = {int(k): v for k, v in t["memory_mb_at"].items()}
    rss = {int(k): v for k, v in t.get("rss_mb_at", {}).items()}
    # Medians over the same windows: one stall of a shared machine moves a 60-frame mean by several percent.
    early, late = np.median(per[:60]), np.median(per[-60:])
    print(f"frames {len(per)} (gt {meta['gt_frames']}, then {meta['forecaster']}); "
          f"frames/s {t['frames_per_second']:.2f}; HTFT buffer {t['buffer_bytes'] / 2**20:.1f} MiB")
    for n in (60, 600, 1200):
        if n in mem:
            print(f"peak RSS at frame {n:5d}: {mem[n]:.1f} MB; current RSS {rss.get(n, float('nan')):.1f} MB")
    print(f"time per frame (mean): first 60 {per[:60].mean() * 1000:.1f} ms, last 60 {per[-60:].mean() * 1000:.1f} ms")
    print(f"time per frame (median): first 60 {early * 1000:.1f} ms, last 60 {late * 1000:.1f} ms; median gt "
          f"{np.median(per[:meta['gt_frames']]) * 1000:.1f} ms, median forecast "
          f"{np.median(per[meta['gt_frames']:]) * 1000 if len(per) > meta['gt_frames'] else float('nan'):.1f} ms")
    last = max(mem)
    print(json.dumps({"memory_ratio_last_over_60": round(mem[last] / mem[60], 4),
                      "current_rss_ratio_last_over_60": round(rss[last] / rss[60], 4) if rss else None,
                      "time_ratio_late_over_early_median": round(late / early, 4),
                      "time_ratio_late_over_early_mean": round(per[-60:].mean() / per[:60].mean(), 4)}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
