"""Training data read from the latent cache (never from raw frames).

- `PairDataset` (stage 1, streaming learning): item = frame T with its condition frame T-1, both real.
- `SceneStreamDataset` (stages 2 and 3): item = one scene (or one window of it), frames in time order.

Per-frame keys (a pair item holds one frame; a stream item stacks T of them on a leading axis):
    latent (C, h, w)          frame T, scaled latent           hdmap_latent (C, h, w)  HD map of frame T
    box_features (N, F)       box geometry of frame T          box_mask (N,) bool
    box_tokens (N, D)         CLIP caches only
    frame_index ()            position in the scene
Pair items add prev_latent (C, h, w) = frame T-1. Every item adds, per scene: anchor_latent (C, h, w) =
frame 0 of the scene, anchor_token (1, D) on CLIP caches, and scene_index.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from stage.formats.latent_cache import LatentCache

_FRAME_KEYS = ("latents", "hdmap_latents", "box_features", "box_mask", "box_tokens", "frame_index")
_RENAME = {"latents": "latent", "hdmap_latents": "hdmap_latent"}


def _frames(cache: LatentCache, scene: int, index) -> dict[str, torch.Tensor]:
    shard = cache.shards[scene]
    out = {_RENAME.get(k, k): shard.get(k, index) for k in _FRAME_KEYS if k in shard.keys}
    out["anchor_latent"] = shard.get("latents", 0)
    if "anchor_token" in shard.keys:
        out["anchor_token"] = shard.get("anchor_token")
    out["scene_index"] = torch.tensor(scene)
    return out


class PairDataset(Dataset):
    """Consecutive real frames (T-1, T) for T >= 1 of every cached scene."""

    def __init__(self, cache: LatentCache, scenes: list[int] | None = None):
        self.cache = cache
        scenes = range(len(cache)) if scenes is None else scenes
        self.items = np.array([(s, t) for s in scenes for t in range(1, cache.shards[s].n_frames)],
                              dtype=np.int64).reshape(-1, 2)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        s, t = (int(x) for x in self.items[i])
        out = _frames(self.cache, s, t)
        out["prev_latent"] = self.cache.shards[s].get("latents", t - 1)
        return out


class SceneStreamDataset(Dataset):
    """Scenes in time order: item i = all frames of scene i, or, with `window`, the i-th run of `window`
    consecutive frames (non-overlapping, in scene then time order; a shorter tail run is dropped)."""

    def __init__(self, cache: LatentCache, window: int | None = None, scenes: list[int] | None = None):
        self.cache = cache
        scenes = list(range(len(cache))) if scenes is None else scenes
        self.items = []
        for s in scenes:
            n = cache.shards[s].n_frames
            if window is None:
                self.items.append((s, 0, n))
            else:
                self.items += [(s, a, a + window) for a in range(0, n - window + 1, window)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        s, a, b = self.items[i]
        return _frames(self.cache, s, slice(a, b))

    def iter_frames(self, i: int):
        """The frames of item i one at a time, in order (per-frame dicts, as a pair item without prev_latent)."""
        s, a, b = self.items[i]
        for t in range(a, b):
            yield _frames(self.cache, s, t)
