"""Training-batch throughput: reading the latent cache vs encoding raw frames on the fly.

Builds the same stage-1 batches (frame T, frame T-1, HD map T, boxes T, anchor = frame 0) both ways
and prints batches per second and their ratio (last line). Uses results/extracted/train and
results/autoencoder when they exist, otherwise a few fabricated 128x224 scenes and an untrained
embedded autoencoder of the default architecture (the timing does not depend on its weights). The
on-the-fly side gets box geometry precomputed: the ratio is what skipping the autoencoder saves.

    .venv/bin/python benchmarks/latent_cache.py [--data DIR --autoencoder DIR] [--batches 10 --batch-size 8]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import default_collate

from stage import config
from stage.formats.latent_cache import LatentCache
from stage.formats.scene import open_split, write_index
from stage.latents.autoencoder import build_embedded, load_codec, save_embedded
from stage.latents.box_tokens import box_features
from stage.latents.cache import encode_split
from stage.latents.datasets import PairDataset
from stage.testing.scenes import fabricate_split

ROOT = Path(__file__).resolve().parents[1]


def on_the_fly_batch(scenes, boxes, items, codec):
    """What training would do without a cache: read frames and encode them with the autoencoder. Box
    geometry comes precomputed (`boxes`), so the comparison charges the on-the-fly side only for encoding."""
    out = []
    for s, t in items:
        scene = scenes[s]
        x = np.stack([scene.frames[t], scene.frames[t - 1], scene.hdmap[t], scene.frames[0]])
        z = codec.encode(x)
        feats, mask = boxes[s]
        out.append({"latent": z[0], "prev_latent": z[1], "hdmap_latent": z[2], "anchor_latent": z[3],
                    "box_features": torch.from_numpy(feats[t]), "box_mask": torch.from_numpy(mask[t])})
    return default_collate(out)


def main(argv=None) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="stage-bench-"))
    try:
        return run(argv, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(argv, tmp: Path) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT / "results/extracted/train"))
    p.add_argument("--autoencoder", default=str(ROOT / "results/autoencoder"))
    p.add_argument("--batches", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--scenes", type=int, default=2, help="use only the first N scenes of the split (encode time)")
    args = p.parse_args(argv)
    cfg = config.default()
    data, ae = Path(args.data), Path(args.autoencoder)
    if not (data / "index.json").is_file():
        data = fabricate_split(tmp / "train", n_scenes=2, n_frames=24)
        print(f"data: fabricated, {data}")
    else:
        sub = tmp / "subset"  # the first N scenes, linked, so the one-off encode stays short
        sub.mkdir()
        names = [s.name for s in open_split(data)][:args.scenes]
        for name in names:
            (sub / name).symlink_to((data / name).resolve())
        write_index(sub, names, {})
        print(f"data: {data} (first {len(names)} scenes)")
        data = sub
    if not (ae / "stage_autoencoder.json").is_file():
        torch.manual_seed(0)
        save_embedded(build_embedded(cfg["autoencoder"]), 1.0, tmp / "ae")
        ae = tmp / "ae"
        print("autoencoder: untrained, default architecture")
    else:
        print(f"autoencoder: {ae}")
    codec = load_codec(cfg["autoencoder"], ae)
    t0 = time.perf_counter()
    encode_split(data, tmp / "cache", codec, cfg["conditions"], cfg["cache"], progress=False)
    print(f"one-off encode of the split: {time.perf_counter() - t0:.1f} s")

    pairs = PairDataset(LatentCache(tmp / "cache"))
    rng = np.random.default_rng(0)
    batches = [rng.choice(len(pairs), args.batch_size, replace=False) for _ in range(args.batches)]
    scenes = open_split(data)
    boxes = [box_features(s.box_table(), len(s), s.frames.shape[1:3], cfg["conditions"]["max_boxes"]) for s in scenes]

    t0 = time.perf_counter()
    for idx in batches:
        cached = default_collate([pairs[int(i)] for i in idx])
    t_cache = (time.perf_counter() - t0) / len(batches)

    t0 = time.perf_counter()
    for idx in batches:
        fly = on_the_fly_batch(scenes, boxes, [tuple(pairs.items[int(i)]) for i in idx], codec)
    t_fly = (time.perf_counter() - t0) / len(batches)

    # same batch both ways
    assert torch.allclose(cached["latent"], fly["latent"], atol=1e-4), "cache and on-the-fly latents differ"
    assert torch.equal(cached["box_mask"], fly["box_mask"])
    print(f"batch size {args.batch_size}, {len(batches)} batches, torch threads {torch.get_num_threads()}")
    print(f"cache:      {1 / t_cache:10.1f} batches/s ({t_cache * 1e3:.2f} ms/batch)")
    print(f"on the fly: {1 / t_fly:10.1f} batches/s ({t_fly * 1e3:.2f} ms/batch)")
    print(f"speed-up (cache / on the fly): {t_fly / t_cache:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
