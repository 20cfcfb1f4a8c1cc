"""The streams of a batched rollout: (scene, seed) pairs, their folders, their inputs and their identity.

    <out>/<scene>/seed-<seed>/   a finished stream, made in a hidden work folder beside it (work_dir) that
                                 also holds its state checkpoints (stage/rollout/state.py)

Both follow the rollout folder format (stage/formats/rollout_folder.py). A stream's identity
(`Stream.settings`: scene, seed, variant, frames, condition, steps, config hash, checkpoint / autoencoder /
latent-shard digests) decides whether a finished folder may be kept; a partial state must also come from
the same batch (`partial_settings`: the stream list and lanes it was generated with), since a stream's
last bits depend on the batch it shares its kernels with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from stage.errors import StageError
from stage.formats import rollout_folder
from stage.formats.latent_cache import SceneShard
from stage.formats.rollout_folder import ArrayFile, FrameFile, stream_id, work_dir
from stage.rollout.layouts import LayoutStream

REGENERATE = "generating the rollout again"  # what --resume does with a finished folder it cannot keep


@dataclass
class SceneInputs:
    """What every stream of one scene reads: its cache shard, its layouts, anchor token and real first latent."""

    shard: SceneShard
    layouts: LayoutStream
    anchor: torch.Tensor          # (1, n_anchor, D), the condition of every frame after the first
    real_first: torch.Tensor      # (1, C, h, w), frame 0's condition
    gt_frames: int                # frames with recorded layouts (the rest are forecast)

    def real_latent(self, t: int) -> torch.Tensor:
        """The cache's latent of frame t, (1, C, h, w): the condition of frame t + 1 when teacher-forced."""
        return self.shard.get("latents", slice(t, t + 1)).float().to(self.real_first.device)


@dataclass
class Stream:
    """One stream of the batch: where it goes, what it reads, and (while it runs) its generator and files."""

    scene: str
    seed: int
    out: Path
    shard: SceneShard
    settings: dict                           # the identity a finished folder is checked against
    generator: torch.Generator | None = None
    frames: FrameFile | None = None          # the work folder's frames, uint8 (T, H, W, 3)
    latents: ArrayFile | None = None         # the work folder's latents, float32 (T, C, h, w)
    meta: dict = field(default_factory=dict)  # a finished folder's metadata (skipped streams)

    @property
    def id(self) -> str:
        return stream_id(self.scene, self.seed)

    @property
    def work(self) -> Path:
        return work_dir(self.out)

    @property
    def state_root(self) -> Path:
        return self.work / rollout_folder.STATE

    def open_files(self, frame_shape: tuple, latent_shape: tuple, create: bool, fix: str = "") -> None:
        """The frames and latents files of the work folder, created at full size or (a resume) checked."""
        self.frames, self.latents = rollout_folder.open_work_files(self.work, frame_shape, latent_shape, create, fix)

    def close_files(self) -> None:
        for f in (self.frames, self.latents):
            if f is not None:
                f.close()


def partial_settings(stream: Stream, batch: list[str], lanes: int) -> dict:
    """The identity a partial state of `stream` is checked against: its own plus the batch it runs in."""
    return {**stream.settings, "batch": batch, "lanes": lanes}


def differing(settings: dict, stored: dict) -> list[str]:
    """The identity keys whose stored value is not this run's."""
    return [k for k, v in settings.items() if stored.get(k) != v]


def finished_meta(out: Path, settings: dict) -> dict | None:
    """The metadata of the finished stream folder `out` if it was made with `settings` and its files read
    back; else None, and one printed line says why it is generated again."""
    meta_path = out / rollout_folder.META
    if not meta_path.is_file():
        return None
    try:
        meta, stored, held, held_latents = rollout_folder.read_finished(out, REGENERATE)
    except StageError as exc:
        print(exc)
        return None
    n_frames = settings["n_frames"]
    if held != n_frames or held_latents != n_frames:
        print(f"{out}: {rollout_folder.FRAMES} or {rollout_folder.LATENTS} does not hold {n_frames} frames; "
              f"{REGENERATE}")
        return None
    differ = differing(settings, stored)
    if differ:
        print(f"{meta_path}: the rollout was made with other settings ({', '.join(differ)} differ); {REGENERATE}")
        return None
    return meta
