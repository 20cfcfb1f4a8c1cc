"""Latent caches built the pipeline's way, from an untrained autoencoder: fabricated scenes encoded for the
training tests (make_toy_cache), and everything a rollout reads (make_rollout_inputs):

    paths = make_rollout_inputs(work_dir, dataroot, config)   # extract + AE + cache + checkpoint
    # -> {"data", "cache", "autoencoder", "checkpoint", "dataroot", "scene"}

`dataroot` is a nuScenes-format world with a long split (the embedded synthetic world, e.g. the test
fixture's or results/world); the config says the extraction size and the model.
"""

from __future__ import annotations

from pathlib import Path

from stage import config as config_mod
from stage.testing.config import tiny_config
from stage.testing.models import write_random_autoencoder, write_random_checkpoint
from stage.testing.scenes import fabricate_split


def encode_with_random_autoencoder(data_dir: str | Path, root: str | Path, config: dict,
                                   seed: int = 0) -> tuple[Path, Path]:
    """A random autoencoder at root/autoencoder and the split `data_dir` encoded with it (`stage encode`'s
    encode_split) into root/cache; returns (autoencoder folder, cache folder)."""
    from stage.latents.autoencoder import load_codec
    from stage.latents.cache import encode_split

    root = Path(root)
    ae_dir = write_random_autoencoder(root / "autoencoder", config["autoencoder"], seed=seed)
    codec = load_codec(config["autoencoder"], ae_dir)
    encode_split(data_dir, root / "cache", codec, config["conditions"], config["cache"], progress=False)
    return ae_dir, root / "cache"


def make_toy_cache(root: str | Path, n_scenes: int = 2, n_frames: int = 8, config: dict | None = None) -> Path:
    """Fabricated scenes of the config's extraction size (default: the tiny config) and their latent cache
    under root; returns the cache directory."""
    cfg = tiny_config() if config is None else config_mod.validate(config)
    root = Path(root)
    data = fabricate_split(root / "split", n_scenes=n_scenes, n_frames=n_frames, height=cfg["extract"]["height"],
                           width=cfg["extract"]["width"])
    return encode_with_random_autoencoder(data, root, cfg)[1]


def make_rollout_inputs(root: str | Path, dataroot: str | Path, config: dict, version: str = "v1.0-stage-synth",
                        split: str = "long", data_dir: str | Path | None = None, max_scenes: int = 1,
                        seed: int = 0) -> dict:
    """Extract the split (unless `data_dir` already holds it), train nothing: a random AE, its latent cache and
    a random-weights checkpoint in the `stage train --out` format."""
    from stage.data.extract import extract
    from stage.formats.scene import open_split

    root = Path(root)
    if data_dir is None:
        data_dir = root / "extracted" / split
        extract(dataroot, version, split, data_dir, {**config["extract"], "max_scenes": max_scenes})
    ae_dir, cache_dir = encode_with_random_autoencoder(data_dir, root, config, seed=seed)
    ckpt = write_random_checkpoint(root / "checkpoint", config, seed=seed)
    return {"data": Path(data_dir), "cache": cache_dir, "autoencoder": ae_dir, "checkpoint": ckpt,
            "dataroot": Path(dataroot), "scene": open_split(data_dir)[0].name}
