"""`stage encode`: the latent cache of an extracted split, brought up to date scene by scene.

Each scene's frames and HD map are encoded by the autoencoder, its boxes turned into box features (and,
with CLIP encoders, box and anchor tokens); the files, the manifest, the re-encoding rule and the reader
(`LatentCache`) are the cache format's, stage/formats/latent_cache.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from stage.config import section_hash
from stage.formats.latent_cache import CacheWriter, new_manifest, scene_key, shard_path
from stage.formats.scene import ExtractedScene, open_split
from stage.latents.autoencoder import Codec
from stage.latents.box_tokens import BOX_FEATURES, box_features
from stage.latents.conditions import ConditionEncoder

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def conditions_key(cond_cfg: dict) -> dict:
    """The condition settings that change what a shard holds."""
    key = {"max_boxes": cond_cfg["max_boxes"], "visible_only": cond_cfg["visible_only"], "features": list(BOX_FEATURES),
           "box_encoder": cond_cfg["box_encoder"], "anchor_encoder": cond_cfg["anchor_encoder"]}
    if cond_cfg["box_encoder"] == "clip":
        key.update(clip_text_path=cond_cfg["clip_text_path"], clip_box_template=cond_cfg["clip_box_template"])
    if cond_cfg["anchor_encoder"] == "clip":
        key.update(clip_vision_path=cond_cfg["clip_vision_path"])
    return key


def encode_scene(scene: ExtractedScene, codec: Codec, conditions: ConditionEncoder, cond_cfg: dict,
                 dtype: torch.dtype, batch_size: int) -> dict[str, torch.Tensor]:
    """All cached tensors of one scene."""
    frames, hdmap = scene.frames, scene.hdmap
    n = len(frames)
    feats, mask = box_features(scene.box_table(), n, frames.shape[1:3], cond_cfg["max_boxes"],
                              cond_cfg["visible_only"])
    out = {
        "latents": codec.encode(frames, batch_size).to(dtype),
        "hdmap_latents": codec.encode(hdmap, batch_size).to(dtype),
        "box_features": torch.from_numpy(feats),
        "box_mask": torch.from_numpy(mask.astype(np.uint8)),
        "frame_index": torch.arange(n, dtype=torch.int64),
    }
    if cond_cfg["box_encoder"] == "clip":
        tokens = [conditions.encode_boxes(out["box_features"][i:i + batch_size], out["box_mask"][i:i + batch_size])
                  for i in range(0, n, batch_size)]
        out["box_tokens"] = torch.cat(tokens).to(dtype)
    if cond_cfg["anchor_encoder"] == "clip":
        out["anchor_token"] = conditions.encode_anchor(anchor_image=np.asarray(frames[:1]))[0].to(dtype)
    return {k: v.contiguous() for k, v in out.items()}


def encode_split(data_dir: str | Path, out_dir: str | Path, codec: Codec, cond_cfg: dict, cache_cfg: dict,
                 progress: bool = True) -> dict:
    """Bring the cache at out_dir up to date with the split at data_dir; returns {encoded, skipped, removed}."""
    scenes = open_split(data_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dtype = _DTYPES[cache_cfg["dtype"]]
    ckey = conditions_key(cond_cfg)
    chash = section_hash(ckey)
    writer = CacheWriter(out_dir, new_manifest(
        data_dir, cache_cfg["dtype"],
        {"hash": codec.hash, "path": codec.path, "scale": codec.scale, "factor": codec.factor,
         "latent_channels": codec.latent_channels},
        {"hash": chash, **ckey, "cross_attention_dim": cond_cfg["cross_attention_dim"]},
        [s.name for s in scenes]))
    conditions = ConditionEncoder(cond_cfg, codec.latent_channels)
    encoded, skipped = [], []
    for scene in tqdm(scenes, desc="encode", unit="scene", disable=not progress):
        key = scene_key(scene, codec.hash, chash, cache_cfg["dtype"])
        shard = shard_path(out_dir, scene.name, Path(data_dir) / "index.json")
        if writer.reuse(scene.name, shard, key):
            skipped.append(scene.name)
            continue
        tensors = encode_scene(scene, codec, conditions, cond_cfg, dtype, cache_cfg["encode_batch_size"])
        writer.write(scene.name, shard, len(scene), tensors, key)
        encoded.append(scene.name)
    removed = writer.finish()
    return {"encoded": encoded, "skipped": skipped, "removed": removed}
