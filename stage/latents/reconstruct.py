"""Ground-truth frames encoded and decoded by the autoencoder: the evaluation's ceiling row (what the
video model could reach at best through this latent space)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from stage.data.scene_format import open_split
from stage.latents.autoencoder import Codec, to_uint8


def reconstruct_split(split_dir, out_dir, codec: Codec, batch_size: int = 32, progress: bool = True) -> list[str]:
    """<out_dir>/<scene>/frames.npy for every scene of an extracted split (the layout `stage evaluate` reads)."""
    out_dir = Path(out_dir)
    scenes = open_split(split_dir)
    for scene in tqdm(scenes, desc="reconstruct", unit="scene", disable=not progress):
        frames = scene.frames
        tmp = out_dir / f".{scene.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        out = np.lib.format.open_memmap(tmp / "frames.npy", mode="w+", dtype=np.uint8, shape=frames.shape)
        with torch.no_grad():
            for a in range(0, len(frames), batch_size):
                out[a:a + batch_size] = to_uint8(codec.decode(codec.encode(np.asarray(frames[a:a + batch_size]))))
        out.flush()
        del out
        shutil.rmtree(out_dir / scene.name, ignore_errors=True)
        os.replace(tmp, out_dir / scene.name)
    return [s.name for s in scenes]
