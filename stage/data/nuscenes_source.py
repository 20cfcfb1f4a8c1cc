"""Open a nuScenes-format dataset with the devkit, checking inputs first so errors say what to fix.

The devkit itself answers bad input with bare asserts or KeyErrors; everything a user can get wrong
(paths, versions, tables, map expansion, split names, images, channels) is checked here first.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

from stage import paths, readback
from stage.data.table_check import FIELDS, check_tables
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
    """NuScenes(version, dataroot) after check_layout, its tables checked (stage.data.table_check) so that a
    bad record is named by table, token and field; devkit failures become StageErrors."""
    from nuscenes.nuscenes import NuScenes

    table_dir = check_layout(dataroot, version)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            nusc = NuScenes(version=version, dataroot=str(dataroot), verbose=False)
    except Exception as exc:  # the devkit trusts its tables: any of Python's errors can come out of a bad one
        # find the record at fault in the files themselves, for a message that names it
        fix = "repair the table (or re-download / re-generate the dataset)"
        check_tables({name: readback.read_json(table_dir / f"{name}.json", fix, list) for name in FIELDS}, table_dir)
        raise StageError(f"nuscenes-devkit could not load {table_dir}: "
                         f"{' '.join(f'{type(exc).__name__}: {exc}'.split())[:300]}") from exc
    check_tables({name: getattr(nusc, name) for name in FIELDS}, table_dir)
    return nusc


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
    splits = readback.read_json(path, 'write it as {"<split>": [scene names]}')
    if split not in splits:
        raise StageError(f"split {split!r} not found in {path}; splits there: {sorted(splits)}")
    names = readback.field(splits, split, path, "list the split's scene names there", list)
    # the workflow names per-scene outputs after these before any table is read
    return [paths.safe_name(n, "scene name", path, "rename the scene there and in scene.json") for n in names]


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

    def step(sd: dict, key: str, seen: set) -> dict | None:
        if not sd[key]:
            return None
        if sd[key] in seen:
            raise StageError(f"sample_data.json: the {channel} chain of scene {scene['name']} returns to record "
                             f"{sd[key]} (its {key!r} tokens form a loop); repair the table")
        nxt = nusc.get("sample_data", sd[key])
        return nxt if in_scene(nxt) else None

    sd = nusc.get("sample_data", first["data"][channel])
    seen = {sd["token"]}
    while (prev := step(sd, "prev", seen)) is not None:
        sd = prev
        seen.add(sd["token"])
    chain, seen = [sd], {sd["token"]}
    while (nxt := step(sd, "next", seen)) is not None:
        sd = nxt
        seen.add(sd["token"])
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
