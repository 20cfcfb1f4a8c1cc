"""Ground-truth frames encoded and decoded by the autoencoder: the evaluation's ceiling row (what the
video model could reach at best through this latent space)."""

from __future__ import annotations

import os

import numpy as np
import torch
from tqdm import tqdm

from stage import paths
from stage.formats.rollout_folder import FRAMES
from stage.formats.scene import open_split
from stage.latents.autoencoder import Codec, to_uint8


def reconstruct_split(split_dir, out_dir, codec: Codec, batch_size: int = 32, progress: bool = True) -> list[str]:
    """<out_dir>/<scene>/frames.npy for every scene of an extracted split (the reconstructions folder of
    stage/formats/rollout_folder.py, which `stage evaluate` reads)."""
    scenes = open_split(split_dir)  # scene names checked there: each is one safe folder name
    out_dir = paths.output_dir(out_dir)
    for scene in tqdm(scenes, desc="reconstruct", unit="scene", disable=not progress):
        frames = scene.frames
        tmp = out_dir / f".{scene.name}.tmp"
        paths.remove_tree(tmp, out_dir)
        tmp.mkdir()
        out = np.lib.format.open_memmap(tmp / FRAMES, mode="w+", dtype=np.uint8, shape=frames.shape)
        with torch.no_grad():
            for a in range(0, len(frames), batch_size):
                out[a:a + batch_size] = to_uint8(codec.decode(codec.encode(np.asarray(frames[a:a + batch_size]))))
        out.flush()
        del out
        paths.remove_tree(out_dir / scene.name, out_dir)
        os.replace(tmp, out_dir / scene.name)
    return [s.name for s in scenes]
