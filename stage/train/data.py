"""What each step reads: a pure function of (seed, step, rank), so a resumed run reads what the original would.

Every item of a dataset is visited once per epoch in a fresh permutation; the global sample number of
item i of rank r at step s is g = (s * world + r) * batch + i, epoch g // N, position g % N, and the
permutation of an epoch depends only on (seed, epoch). No DataLoader state to save or replay.
"""

from __future__ import annotations

import hashlib

import torch
from torch.utils.data import default_collate

from stage.latents.datasets import PairDataset, SceneStreamDataset
from stage.model import FrameConditions


def derived_seed(*parts) -> int:
    """A 63-bit seed from any parts (seed, stage, step, rank, purpose): independent streams without bookkeeping."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") >> 1


def step_generator(device: torch.device, *parts) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(derived_seed(*parts))


def indices_for_step(n: int, batch: int, seed: int, step: int, rank: int = 0, world: int = 1,
                     salt: str = "epoch") -> list[int]:
    """Dataset indices of this rank's batch at `step` (`salt` gives another stream of permutations)."""
    out, cache = [], {}
    for i in range(batch):
        g = (step * world + rank) * batch + i
        epoch, pos = divmod(g, n)
        if epoch not in cache:
            cache[epoch] = torch.randperm(n, generator=torch.Generator().manual_seed(derived_seed(seed, salt, epoch)))
        out.append(int(cache[epoch][pos]))
    return out


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: (v.to(device).float() if v.is_floating_point() else v.to(device)) for k, v in batch.items()}


def pair_batch(ds: PairDataset, indices: list[int], device: torch.device) -> dict:
    """Collated pair items (B, ...): latent, prev_latent, hdmap_latent, box_*, anchor_*, frame_index."""
    return to_device(default_collate([ds[i] for i in indices]), device)


def window_batch(ds: SceneStreamDataset, indices: list[int], device: torch.device) -> dict:
    """Collated windows (B, T, ...) plus prev_latent (B, T, C, h, w): the real frame before each frame.

    The first frame of a scene has no previous frame: its condition frame is itself, as at inference
    (frame 0 conditions on the real first frame).
    """
    items = []
    for i in indices:
        item = ds[i]
        s, a, _ = ds.items[i]
        first = ds.cache.shards[s].get("latents", a - 1 if a > 0 else a)
        item["prev_latent"] = torch.cat([first[None], item["latent"][:-1]])
        items.append(item)
    return to_device(default_collate(items), device)


PER_WINDOW = ("anchor_latent", "anchor_token", "scene_index")


def frame_of(window: dict, j: int) -> dict:
    """Frame j of a window batch, shaped like a pair batch (B, ...)."""
    return {k: (v if k in PER_WINDOW else v[:, j]) for k, v in window.items()}


def frame_conditions(conditions: torch.nn.Module, frame: dict, cond_latent: torch.Tensor) -> FrameConditions:
    """FrameConditions of a frame batch (B, ...) with the given condition-frame latent (B, C, h, w)."""
    boxes, anchor = conditions(frame)
    first = (frame["frame_index"] == 0).view(-1, 1, 1)
    anchor = anchor.masked_fill(first, 0.0)  # the very first frame of a video has no anchor yet: zeros [paper]
    return FrameConditions(cond_latent, frame["hdmap_latent"], boxes, anchor)
