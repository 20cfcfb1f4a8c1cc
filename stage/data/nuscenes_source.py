"""Open a nuScenes-format dataset with the devkit, checking inputs first so errors say what to fix.

The devkit itself answers bad input with bare asserts or KeyErrors; everything a user can get wrong
(paths, versions, tables, map expansion, split names, images, channels) is checked here first.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

from stage.errors import StageError

TABLES = ("category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor", "ego_pose",
          "log", "scene", "sample", "sample_data", "sample_annotation", "map")
OFFICIAL_VERSIONS = ("v1.0-mini", "v1.0-trainval", "v1.0-test")
OFFICIAL_SPLITS = {
    "v1.0-mini": ("mini_train", "mini_val"),
    "v1.0-trainval": ("train", "val", "train_detect", "train_track"),
    "v1.0-test": ("test",),
}
MAP_HELP = ("download the nuScenes map expansion (v1.3 or newer) and unpack it so that "
            "DATAROOT/maps/expansion/<location>.json exists")


def check_layout(dataroot: str | Path, version: str) -> Path:
    """Check the folder structure before the devkit sees it; returns the table folder."""
    root = Path(dataroot)
    if not root.is_dir():
        raise StageError(f"dataroot {root} does not exist; pass --dataroot pointing at the folder that holds "
                         f"{version}/ and maps/")
    table_dir = root / version
    if not table_dir.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "scene.json").is_file())
        raise StageError(f"unknown version {version!r}: {table_dir} does not exist. Versions found under {root}: "
                         f"{found or 'none'}; pass one of them with --version")
    for name in TABLES:
        if not (table_dir / f"{name}.json").is_file():
            raise StageError(f"table {table_dir / (name + '.json')} is missing; the {version} tables are "
                             "incomplete (re-download or re-generate the dataset)")
    return table_dir


def open_nuscenes(dataroot: str | Path, version: str):
    """NuScenes(version, dataroot) after check_layout, with devkit failures turned into StageErrors."""
    from nuscenes.nuscenes import NuScenes

    check_layout(dataroot, version)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return NuScenes(version=version, dataroot=str(dataroot), verbose=False)
    except (AssertionError, KeyError, ValueError, json.JSONDecodeError) as exc:
        raise StageError(f"nuscenes-devkit could not load {Path(dataroot) / version}: "
                         f"{type(exc).__name__}: {exc}") from exc


def open_map(dataroot: str | Path, location: str):
    from nuscenes.map_expansion.map_api import NuScenesMap, locations

    if location not in locations:
        raise StageError(f"log location {location!r} is not a nuScenes map name ({', '.join(locations)}); "
                         "NuScenesMap accepts only these")
    path = Path(dataroot) / "maps" / "expansion" / f"{location}.json"
    if not path.is_file():
        raise StageError(f"map expansion {path} is missing: {MAP_HELP}")
    try:
        return NuScenesMap(dataroot=str(dataroot), map_name=location)
    except Exception as exc:  # the devkit raises bare Exception for outdated maps
        raise StageError(f"map expansion {path} could not be loaded: {exc}") from exc


def split_scene_names(dataroot: str | Path, version: str, split: str) -> list[str]:
    """Scene names of a split: nuScenes' official splits, or a synthetic world's own splits.json."""
    if version in OFFICIAL_VERSIONS:
        from nuscenes.utils.splits import create_splits_scenes

        if split not in OFFICIAL_SPLITS[version]:
            raise StageError(f"split {split!r} is not a split of {version}; use one of {OFFICIAL_SPLITS[version]}")
        return list(create_splits_scenes(verbose=False)[split])
    path = Path(dataroot) / version / "splits.json"
    if not path.is_file():
        raise StageError(f"{path} is missing: a dataset that is not an official nuScenes version must list its "
                         'splits there as {"<split>": [scene names]}')
    splits = json.loads(path.read_text())
    if split not in splits:
        raise StageError(f"split {split!r} not found in {path}; splits there: {sorted(splits)}")
    return list(splits[split])


def select_scenes(nusc, dataroot, version: str, split: str, max_scenes: int | None = None) -> list[dict]:
    names = split_scene_names(dataroot, version, split)
    by_name = {s["name"]: s for s in nusc.scene}
    scenes = [by_name[n] for n in names if n in by_name]
    if not scenes:
        raise StageError(f"split {split!r} has no scenes in {Path(dataroot) / version} "
                         f"({len(names)} names listed, none present); check --version and --split")
    return scenes[:max_scenes] if max_scenes else scenes


def camera_chain(nusc, scene: dict, channel: str) -> list[dict]:
    """The scene's full sample_data chain of one channel, in time order (keyframes and sweeps)."""
    first = nusc.get("sample", scene["first_sample_token"])
    if channel not in first["data"]:
        raise StageError(f"scene {scene['name']} has no {channel} data (its first sample has "
                         f"{sorted(first['data'])}); choose another channel with extract.channel or drop the scene")

    def in_scene(sd: dict) -> bool:
        return nusc.get("sample", sd["sample_token"])["scene_token"] == scene["token"]

    sd = nusc.get("sample_data", first["data"][channel])
    while sd["prev"] and in_scene(prev := nusc.get("sample_data", sd["prev"])):
        sd = prev
    chain = [sd]
    while sd["next"] and in_scene(nxt := nusc.get("sample_data", sd["next"])):
        sd = nxt
        chain.append(sd)
    return chain


def planned_scene_names(config: dict, split: str) -> list[str]:
    """Scene names of a split known before any data exists, so the workflow can name per-scene outputs:
    the synthetic world's plan, or the split lists (nuScenes' official ones, or DATAROOT/VERSION/splits.json)."""
    dataset = config["dataset"]
    if dataset["source"] == "synthetic":
        from stage.data.synth.world import scene_plans

        names = [p.name for p in scene_plans(config["synth"]) if p.split == split]
        if not names:
            raise StageError(f"the synthetic world has no scenes in split {split!r} (its splits: train, long); "
                             "check dataset.train_split / dataset.long_split and synth.n_*_scenes")
        return names
    return split_scene_names(dataset["dataroot"], dataset["version"], split)
