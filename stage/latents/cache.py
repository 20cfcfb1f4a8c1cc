"""The latent cache: per-scene safetensors shards + manifest.json, written by `stage encode`.

    <cache>/manifest.json              format, autoencoder (hash, scale, path), conditions, scenes in order
    <cache>/<scene>.safetensors        per scene, T frames:
        latents          (T, C, h, w)  frames, posterior mean x latent scale
        hdmap_latents    (T, C, h, w)  HD-map condition images, same encoding
        box_features     (T, N, F)     float32, see stage.latents.box_tokens.BOX_FEATURES
        box_mask         (T, N)        uint8 (1 = box present)
        frame_index      (T,)          int64
        box_tokens       (T, N, D)     only with conditions.box_encoder: clip
        anchor_token     (1, D)        only with conditions.anchor_encoder: clip (CLIP token of frame 0)

A scene is re-encoded only when its key changes: source hash (frames, HD map, boxes, meta), autoencoder
hash, condition-encoder settings, dtype or format version. Shards and manifest are written under
temporary names and renamed, so an interrupted run leaves a consistent cache and resumes.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from stage.atomic import write_text
from stage.config import section_hash
from stage.data.scene_format import ExtractedScene, open_split
from stage.errors import StageError
from stage.latents.autoencoder import Codec
from stage.latents.box_tokens import BOX_FEATURES, box_features
from stage.latents.conditions import ConditionEncoder

CACHE_FORMAT = 1
MANIFEST = "manifest.json"
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def scene_hash(scene: ExtractedScene) -> str:
    """Content hash of what the cache is made from: frames, HD map, boxes and meta of one scene."""
    h = hashlib.sha256()
    for name in ("meta.json", "frames.npy", "hdmap.npy", "boxes.parquet"):
        h.update(name.encode())
        with open(scene.path / name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def conditions_key(cond_cfg: dict) -> dict:
    """The condition settings that change what a shard holds."""
    key = {"max_boxes": cond_cfg["max_boxes"], "visible_only": cond_cfg["visible_only"], "features": list(BOX_FEATURES),
           "box_encoder": cond_cfg["box_encoder"], "anchor_encoder": cond_cfg["anchor_encoder"]}
    if cond_cfg["box_encoder"] == "clip":
        key.update(clip_text_path=cond_cfg["clip_text_path"], clip_box_template=cond_cfg["clip_box_template"])
    if cond_cfg["anchor_encoder"] == "clip":
        key.update(clip_vision_path=cond_cfg["clip_vision_path"])
    return key


def _write_json(path: Path, data: dict) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True))


def read_manifest(cache_dir: str | Path) -> dict | None:
    p = Path(cache_dir) / MANIFEST
    return json.loads(p.read_text()) if p.is_file() else None


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
    old = read_manifest(out_dir) or {}
    old_scenes = old.get("scenes", {}) if old.get("format_version") == CACHE_FORMAT else {}
    manifest = {
        "format_version": CACHE_FORMAT,
        "source": str(data_dir),
        "dtype": cache_cfg["dtype"],
        "autoencoder": {"hash": codec.hash, "path": codec.path, "scale": codec.scale, "factor": codec.factor,
                        "latent_channels": codec.latent_channels},
        "conditions": {"hash": chash, **ckey, "cross_attention_dim": cond_cfg["cross_attention_dim"]},
        "order": [s.name for s in scenes],
        "scenes": {},
    }
    conditions = ConditionEncoder(cond_cfg, codec.latent_channels)
    encoded, skipped = [], []
    for scene in tqdm(scenes, desc="encode", unit="scene", disable=not progress):
        src = scene_hash(scene)
        key = {"source_hash": src, "autoencoder_hash": codec.hash, "conditions_hash": chash,
               "dtype": cache_cfg["dtype"]}
        prev = old_scenes.get(scene.name)
        shard = out_dir / f"{scene.name}.safetensors"
        if prev and all(prev.get(k) == v for k, v in key.items()) and shard.is_file():
            manifest["scenes"][scene.name] = prev
            skipped.append(scene.name)
            continue
        tensors = encode_scene(scene, codec, conditions, cond_cfg, dtype, cache_cfg["encode_batch_size"])
        tmp = out_dir / f".{shard.name}.tmp-{os.getpid()}"
        save_file(tensors, str(tmp), metadata={"scene": scene.name, **key})
        os.replace(tmp, shard)
        manifest["scenes"][scene.name] = {"file": shard.name, "n_frames": len(scene), **key,
                                          "shapes": {k: list(v.shape) for k, v in tensors.items()}}
        encoded.append(scene.name)
        # keep the manifest current after each scene, so an interrupted run resumes where it stopped
        partial = {**manifest, "scenes": {**{k: v for k, v in old_scenes.items() if k not in manifest["scenes"]
                                             and k in manifest["order"]}, **manifest["scenes"]}}
        _write_json(out_dir / MANIFEST, partial)
    removed = [name for name in old_scenes if name not in manifest["scenes"]]
    _write_json(out_dir / MANIFEST, manifest)
    for name in removed:
        (out_dir / old_scenes[name].get("file", f"{name}.safetensors")).unlink(missing_ok=True)
    return {"encoded": encoded, "skipped": skipped, "removed": removed}


@dataclass
class SceneShard:
    """Memory-mapped tensors of one cached scene (safetensors.safe_open)."""

    name: str
    path: Path
    n_frames: int

    def __post_init__(self):
        self._f = None
        self.keys = set(self._open().keys())

    def _open(self):
        if self._f is None:  # opened lazily, so shards pickle into DataLoader workers
            self._f = safe_open(str(self.path), framework="pt")
        return self._f

    def __getstate__(self):
        return {**self.__dict__, "_f": None}

    def get(self, key: str, index=slice(None)) -> torch.Tensor:
        """Rows `index` (int or slice) of tensor `key`, read without loading the rest of the shard."""
        t = self._open().get_slice(key)[index]
        return t.bool() if key == "box_mask" else t


class LatentCache:
    """Read side of the cache. `expect_autoencoder_hash` guards against decoding with the wrong AE."""

    def __init__(self, cache_dir: str | Path, expect_autoencoder_hash: str | None = None):
        self.dir = Path(cache_dir)
        self.manifest = read_manifest(self.dir)
        if self.manifest is None:
            raise StageError(f"no latent cache at {self.dir} ({MANIFEST} missing); run "
                             f"`stage encode --out {self.dir}` first.")
        if self.manifest.get("format_version") != CACHE_FORMAT:
            raise StageError(f"{self.dir / MANIFEST} has cache format {self.manifest.get('format_version')}, this "
                             f"code reads {CACHE_FORMAT}; re-run `stage encode --out {self.dir}`.")
        ae = self.manifest["autoencoder"]
        if expect_autoencoder_hash is not None and ae["hash"] != expect_autoencoder_hash:
            raise StageError(f"latent cache {self.dir} was made by autoencoder {ae['hash']} ({ae['path']}), not by the "
                             f"configured one ({expect_autoencoder_hash}); re-run `stage encode --out {self.dir}` "
                             "with this autoencoder (or point to the matching cache).")
        self.scale = float(ae["scale"])
        self.autoencoder_hash = ae["hash"]
        self.shards: list[SceneShard] = []
        for name in self.manifest["order"]:
            entry = self.manifest["scenes"].get(name)
            if entry is None or not (self.dir / entry["file"]).is_file():
                raise StageError(f"latent cache {self.dir} lacks scene {name} (interrupted encode?); "
                                 f"re-run `stage encode --out {self.dir}`.")
            if entry["autoencoder_hash"] != ae["hash"]:
                raise StageError(f"latent cache {self.dir}: scene {name} was encoded by autoencoder "
                                 f"{entry['autoencoder_hash']}, the rest by {ae['hash']} (interrupted encode?); "
                                 f"re-run `stage encode --out {self.dir}`.")
            self.shards.append(SceneShard(name, self.dir / entry["file"], int(entry["n_frames"])))

    def __len__(self) -> int:
        return len(self.shards)

    @property
    def scene_names(self) -> list[str]:
        return [s.name for s in self.shards]
