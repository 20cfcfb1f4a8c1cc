"""The on-disk format of the latent cache (`stage encode`): per-scene safetensors shards + manifest.json, the
writer that updates a cache folder and `LatentCache`, the checked reader.

    <cache>/manifest.json              format_version (CACHE_FORMAT), source (the split), dtype,
                                       autoencoder {hash, path, scale, factor, latent_channels},
                                       conditions {hash, the condition settings, cross_attention_dim},
                                       order [scene names], scenes {scene: entry}
        entry                          file (the shard's name), n_frames, the scene's key (source_hash,
                                       autoencoder_hash, conditions_hash, dtype), size and sha256 of the
                                       shard, shapes {tensor: shape}
    <cache>/<scene>.safetensors        per scene, T frames (metadata: scene, and the scene's key):
        latents          (T, C, h, w)  frames, posterior mean x latent scale
        hdmap_latents    (T, C, h, w)  HD-map condition images, same encoding
        box_features     (T, N, F)     float32, see stage.latents.box_tokens.BOX_FEATURES
        box_mask         (T, N)        uint8 (1 = box present)
        frame_index      (T,)          int64
        box_tokens       (T, N, D)     only with conditions.box_encoder: clip
        anchor_token     (1, D)        only with conditions.anchor_encoder: clip (CLIP token of frame 0)

Format version 2 (2: entries record each shard's byte size and sha256); a cache of another version is
refused by the reader and re-encoded whole by `stage encode`.

A scene is re-encoded when its key changes (source hash of frames, HD map, boxes and meta, autoencoder
hash, condition-encoder settings, dtype or format version) or when its shard no longer has the byte size
and sha256 its manifest entry records (truncated, replaced, half-copied). Shards and manifest are written
under temporary names and renamed, so an interrupted run leaves a consistent cache and resumes.

The manifest and the shards are read back, so nothing in them is trusted: `LatentCache` refuses, with one
line naming the file, a damaged manifest, an entry missing a field, a shard file name that is not a plain
name in the cache folder, and a shard whose size, sha256, header or tensor shapes differ from its entry.
The sha256 is checked for every shard when the cache is opened: about 2 ms for a 140-frame shard of the
default config (2.3 MB), 16 ms for a 624-frame one, against the seconds a training run or rollout takes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from stage.atomic import write_text
from stage.digest import file_digest, sha256_of
from stage.errors import StageError
from stage.formats.scene import ExtractedScene
from stage.formats.tensor_file import save_tensors
from stage.paths import name_problem, remove_tree, safe_name
from stage.readback import field, open_rows, read_json, safetensors_header

CACHE_FORMAT = 2  # 2: entries record each shard's byte size and sha256
MANIFEST = "manifest.json"


def scene_hash(scene: ExtractedScene) -> str:
    """Content hash of what the cache is made from: frames, HD map, boxes and meta of one scene."""
    return sha256_of([scene.path / n for n in ("meta.json", "frames.npy", "hdmap.npy", "boxes.parquet")], named=True)


def scene_key(scene: ExtractedScene, autoencoder_hash: str, conditions_hash: str, dtype: str) -> dict:
    """What a scene's shard is made from: the fields a manifest entry and the shard's metadata record, equal
    exactly when the shard can be kept."""
    return {"source_hash": scene_hash(scene), "autoencoder_hash": autoencoder_hash,
            "conditions_hash": conditions_hash, "dtype": dtype}


def encode_fix(cache_dir: str | Path) -> str:
    return f"re-run `stage encode --out {cache_dir}`"


def read_manifest(cache_dir: str | Path) -> dict | None:
    """The manifest (a dict), None when there is none; StageError when it is not a readable JSON object."""
    p = Path(cache_dir) / MANIFEST
    return read_json(p, encode_fix(cache_dir)) if p.is_file() else None


def new_manifest(source: str | Path, dtype: str, autoencoder: dict, conditions: dict, order: list[str]) -> dict:
    """A manifest without scene entries yet (see the module notes for the fields)."""
    return {"format_version": CACHE_FORMAT, "source": str(source), "dtype": dtype, "autoencoder": autoencoder,
            "conditions": conditions, "order": order, "scenes": {}}


def shard_path(cache_dir: Path, scene: str, listed_in: str | Path) -> Path:
    """Where scene `scene` (named in `listed_in`, the split's index) has its shard."""
    return cache_dir / safe_name(f"{scene}.safetensors", "scene", listed_in, "rename the scene in the dataset")


def shard_record(path: Path) -> dict:
    """What a manifest entry records to recognise its shard: byte size and sha256."""
    return {"size": path.stat().st_size, "sha256": file_digest(path)}


def shard_intact(shard: Path, entry: dict) -> bool:
    """Whether the entry names `shard` (the scene's own file) and it has the recorded size and sha256."""
    if entry.get("file") != shard.name or not shard.is_file():
        return False
    return shard.stat().st_size == entry.get("size") and file_digest(shard) == entry.get("sha256")


def _write_json(path: Path, data: dict) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True))


def _previous_scenes(out_dir: Path) -> dict:
    """{scene: manifest entry} of the cache being updated; a damaged or old-format manifest counts as none
    (every scene is re-encoded), since encode is what repairs a cache."""
    try:
        old = read_manifest(out_dir) or {}
    except StageError as exc:
        print(f"ignoring the damaged manifest, re-encoding every scene: {exc}")
        return {}
    scenes = old.get("scenes")
    if old.get("format_version") != CACHE_FORMAT or not isinstance(scenes, dict):
        return {}
    return {name: entry for name, entry in scenes.items() if isinstance(entry, dict)}


def _remove_shard(out_dir: Path, name: str, entry: dict, kept: set[str]) -> None:
    """Delete the shard of a scene that left the split, only if its recorded name is a file of the cache folder
    that no kept scene uses (the name is read back from the old manifest, so it is not trusted)."""
    file = entry.get("file", f"{name}.safetensors")
    if name_problem(file):
        print(f"not deleting {file!r} (recorded for removed scene {name}): not a file name in {out_dir}")
        return
    if file not in kept:
        remove_tree(out_dir / file, out_dir)


class CacheWriter:
    """Brings the cache folder `out_dir` up to `manifest` (a `new_manifest`), scene by scene: `reuse` keeps an
    intact shard of the same key, `write` stores a new one, `finish` writes the final manifest and deletes the
    shards of scenes that left the split. The manifest is rewritten after every new shard."""

    def __init__(self, out_dir: Path, manifest: dict):
        self.dir = Path(out_dir)
        self.manifest = manifest
        self.previous = _previous_scenes(self.dir)

    def reuse(self, name: str, shard: Path, key: dict) -> bool:
        """Keep the previous entry of scene `name` when it records `key` and its shard is intact."""
        prev = self.previous.get(name)
        if not prev or not all(prev.get(k) == v for k, v in key.items()):
            return False
        if shard_intact(shard, prev):
            self.manifest["scenes"][name] = prev
            return True
        print(f"re-encoding {name}: shard {shard} does not match its manifest entry")
        return False

    def write(self, name: str, shard: Path, n_frames: int, tensors: dict[str, torch.Tensor], key: dict) -> None:
        """Store scene `name`'s tensors as `shard` (temporary name, then rename) and record it."""
        tmp = self.dir / f".{shard.name}.tmp-{os.getpid()}"
        save_tensors(tensors, tmp, metadata={"scene": name, **key})
        record = shard_record(tmp)
        os.replace(tmp, shard)
        scenes = self.manifest["scenes"]
        scenes[name] = {"file": shard.name, "n_frames": n_frames, **key, **record,
                        "shapes": {k: list(v.shape) for k, v in tensors.items()}}
        # keep the manifest current after each scene, so an interrupted run resumes where it stopped
        partial = {**self.manifest, "scenes": {**{k: v for k, v in self.previous.items() if k not in scenes
                                                  and k in self.manifest["order"]}, **scenes}}
        _write_json(self.dir / MANIFEST, partial)

    def finish(self) -> list[str]:
        """Write the manifest; returns the scenes removed from the cache."""
        removed = [name for name in self.previous if name not in self.manifest["scenes"]]
        _write_json(self.dir / MANIFEST, self.manifest)
        kept = {entry["file"] for entry in self.manifest["scenes"].values()}
        for name in removed:
            _remove_shard(self.dir, name, self.previous[name], kept)
        return removed


@dataclass
class SceneShard:
    """The tensors of one cached scene, read row by row (TensorRows: nothing read stays resident)."""

    name: str
    path: Path
    n_frames: int
    sha256: str  # verified against the file when the cache was opened

    def __post_init__(self):
        self._rows = open_rows(self.path, encode_fix(self.path.parent))  # holds no file open: pickles into workers
        self.keys = set(self._rows.keys())

    def get(self, key: str, index=slice(None)) -> torch.Tensor:
        """Rows `index` (int or slice) of tensor `key`, read without loading the rest of the shard."""
        try:
            t = self._rows.get(key, index)
        except OSError as exc:  # changed on disk since the cache was opened and verified
            raise StageError(f"{self.path}: {exc.strerror or exc}; {encode_fix(self.path.parent)}") from exc
        return t.bool() if key == "box_mask" else t


_PER_FRAME = ("latents", "hdmap_latents", "box_features", "box_mask", "frame_index")  # every shard holds these


def _check_shapes(shard: Path, recorded: dict, n_frames: int, fix: str) -> None:
    """The shard's header against its manifest entry: the same tensors and shapes, T = n_frames rows each."""
    _, shapes = safetensors_header(shard, fix)
    for key in sorted(set(shapes) | set(recorded) | set(_PER_FRAME)):
        if key not in shapes:
            raise StageError(f"{shard}: tensor {key!r} is missing; {fix}")
        if shapes[key] != recorded.get(key):
            raise StageError(f"{shard}: tensor {key!r} has shape {shapes[key]}, its manifest entry records "
                             f"{recorded.get(key)} (field 'shapes'); {fix}")
        if key in _PER_FRAME and shapes[key][:1] != [n_frames]:
            raise StageError(f"{shard}: tensor {key!r} has shape {shapes[key]}, not {n_frames} frames (field "
                             f"'n_frames' of its manifest entry); {fix}")


def _check_shard(shard: Path, entry: dict, where: str, fix: str) -> None:
    """Size first (a stat), then sha256, then the header: each a one-line StageError naming the shard."""
    size = field(entry, "size", where, fix, int)
    if shard.stat().st_size != size:
        raise StageError(f"{shard}: {shard.stat().st_size} bytes, its manifest entry records {size} (truncated or "
                         f"replaced?); {fix}")
    if file_digest(shard) != field(entry, "sha256", where, fix, str):
        raise StageError(f"{shard}: its sha256 differs from its manifest entry (damaged or replaced); {fix}")
    _check_shapes(shard, field(entry, "shapes", where, fix, dict), field(entry, "n_frames", where, fix, int), fix)


class LatentCache:
    """Read side of the cache. `expect_autoencoder_hash` guards against decoding with the wrong AE.

    Every shard is verified on open (size, sha256, header, shapes; see the module notes for the cost), so a
    damaged cache is refused here, in the main process, not in a DataLoader worker halfway through training."""

    def __init__(self, cache_dir: str | Path, expect_autoencoder_hash: str | None = None):
        self.dir = Path(cache_dir)
        path, fix = self.dir / MANIFEST, encode_fix(self.dir)
        self.manifest = read_manifest(self.dir)
        if self.manifest is None:
            raise StageError(f"no latent cache at {self.dir} ({MANIFEST} missing); run "
                             f"`stage encode --out {self.dir}` first.")
        if self.manifest.get("format_version") != CACHE_FORMAT:
            raise StageError(f"{path} has cache format {self.manifest.get('format_version')}, this "
                             f"code reads {CACHE_FORMAT}; re-run `stage encode --out {self.dir}`.")
        ae = field(self.manifest, "autoencoder", path, fix, dict)
        ae_where = f"{path} (autoencoder)"
        ae_hash = field(ae, "hash", ae_where, fix, str)
        if expect_autoencoder_hash is not None and ae_hash != expect_autoencoder_hash:
            raise StageError(f"latent cache {self.dir} was made by autoencoder {ae_hash} ({ae.get('path')}), not by "
                             f"the configured one ({expect_autoencoder_hash}); re-run `stage encode --out {self.dir}` "
                             "with this autoencoder (or point to the matching cache).")
        self.scale = float(field(ae, "scale", ae_where, fix, (int, float)))
        self.latent_channels = field(ae, "latent_channels", ae_where, fix, int)  # what training builds on
        self.autoencoder_hash = ae_hash
        scenes = field(self.manifest, "scenes", path, fix, dict)
        self.shards: list[SceneShard] = [self._shard(name, scenes, path, fix)
                                         for name in field(self.manifest, "order", path, fix, list)]

    def _shard(self, name, scenes: dict, path: Path, fix: str) -> SceneShard:
        """The verified shard of scene `name` (an entry of the manifest's order)."""
        safe_name(name, "scene", f"{path} (field 'order')", fix)
        entry = scenes.get(name)
        if entry is None:
            raise StageError(f"{path}: no entry for scene {name}, so latent cache {self.dir} lacks it (interrupted "
                             f"encode?); {fix}.")
        where = f"{path} (scenes[{name!r}])"
        if not isinstance(entry, dict):
            raise StageError(f"{where}: the entry is a {type(entry).__name__}, not an object; {fix}")
        file = safe_name(field(entry, "file", where, fix, str), "shard file", f"{where} (field 'file')", fix)
        shard = self.dir / file
        entry_ae = field(entry, "autoencoder_hash", where, fix, str)
        if entry_ae != self.autoencoder_hash:
            raise StageError(f"latent cache {self.dir}: scene {name} was encoded by autoencoder "
                             f"{entry_ae}, the rest by {self.autoencoder_hash} (interrupted encode?); "
                             f"re-run `stage encode --out {self.dir}`.")
        if not shard.is_file():
            raise StageError(f"{shard} is missing: latent cache {self.dir} lacks scene {name} (interrupted "
                             f"encode?); {fix}.")
        _check_shard(shard, entry, where, fix)
        return SceneShard(name, shard, field(entry, "n_frames", where, fix, int), entry["sha256"])

    def __len__(self) -> int:
        return len(self.shards)

    @property
    def scene_names(self) -> list[str]:
        return [s.name for s in self.shards]
