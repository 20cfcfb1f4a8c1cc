"""Reading what is evaluated: rollout folders <root>/<variant>/<scene>/seed-<seed>/ (one per stream) and
autoencoder reconstructions <reconstructions>/<scene>/, both in the rollout folder format
(stage/formats/rollout_folder.py), and the layout lists their metadata records.

A *stream* is (scene, seed). Every variant under one root must hold the same streams, made under one rollout
protocol (check_streams / check_protocols): a variant missing a stream, or made with other settings, would
otherwise be compared on different data.
"""

from __future__ import annotations

from dataclasses import dataclass, field as dc_field
from pathlib import Path

import numpy as np

from stage.errors import StageError
from stage.evaluate import protocol
from stage.formats import rollout_folder
from stage.formats.rollout_folder import RERUN_ROLLOUT, load_frames, stream_id
from stage.readback import field

RERUN_RECONSTRUCT = "re-run `stage reconstruct` for this scene"
# Settings that must agree between every stream of every variant (else the variants were not rolled out
# alike), and those that must agree between variants on the same stream (the same scene data).
GLOBAL_KEYS = ("n_frames", "num_steps", "config_hash", "autoencoder_hash", "forecaster")
STREAM_KEYS = ("gt_frames", "cache_sha256")
RESERVED = ("ceiling", "still_photograph", "persistence", "latent_persistence", "real_floor")


@dataclass
class Video:
    """One video to score: a generated stream or a reconstruction. `frames` is memory-mapped."""

    name: str                 # scene name
    path: Path                # its frames file
    frames: np.ndarray
    gt_frames: int | None     # frames with ground truth (None = as many as the ground truth has)
    layout: list[str]         # per-frame layout source ("gt" or a forecaster name)
    seed: int | None = None
    meta: dict = dc_field(default_factory=dict)

    @property
    def stream(self) -> str:
        return stream_id(self.name, self.seed)


def parse_layout_source(value, n_frames: int, where: str) -> list[str]:
    """Per-frame labels from a per-frame list, a run-length list ([label, count] pairs or
    {"source"|"label"|"name": label, "frames"|"count"|"n"|"length": count} dicts) or one string.
    Shorter lists are padded with their last label; "unknown" when absent."""
    if value is None:
        return ["unknown"] * n_frames
    if isinstance(value, str):
        return [value] * n_frames
    labels: list[str] = []
    try:
        for item in value:
            if isinstance(item, str):
                labels.append(item)
            elif isinstance(item, (list, tuple)) and len(item) == 2:
                labels += [str(item[0])] * int(item[1])
            elif isinstance(item, dict):
                label = next(item[k] for k in ("source", "label", "name") if k in item)
                count = next(item[k] for k in ("frames", "count", "n", "length") if k in item)
                labels += [str(label)] * int(count)
            else:
                raise ValueError(f"unrecognised entry {item!r}")
    except (TypeError, ValueError, StopIteration) as exc:
        raise StageError(f"{where}: layout_source must be a per-frame list of labels or a run-length list "
                         f"([label, count] pairs); {exc}") from exc
    if not labels:
        return ["unknown"] * n_frames
    return (labels + [labels[-1]] * n_frames)[:n_frames]


def run_length(labels: list[str]) -> list[list]:
    """['gt', 'gt', 'f'] -> [['gt', 2], ['f', 1]]."""
    out: list[list] = []
    for label in labels:
        if out and out[-1][0] == label:
            out[-1][1] += 1
        else:
            out.append([label, 1])
    return out


def _stream_video(sdir: Path, variant: str, scene: str, seed: int, condition: str, flag: str) -> Video:
    meta = rollout_folder.read_meta(sdir, variant, scene, seed, RERUN_ROLLOUT)
    meta_path = sdir / rollout_folder.META
    got = meta.get("condition", condition)
    if got != condition:
        other = "--one-step" if got == "real" else "--rollouts"
        raise StageError(f"{meta_path}: field 'condition' is {got!r} but {flag} holds {condition!r} runs; pass "
                         f"this folder with {other} instead")
    gt_frames = None if meta.get("gt_frames") is None else field(meta, "gt_frames", meta_path, RERUN_ROLLOUT, int)
    frames = rollout_folder.read_frames(sdir, meta, RERUN_ROLLOUT)
    return Video(scene, sdir / rollout_folder.FRAMES, frames, gt_frames,
                 parse_layout_source(meta.get("layout_source"), len(frames), str(meta_path)), seed, meta)


def find_rollouts(root: str | Path, condition: str = "generated",
                  flag: str = "--rollouts") -> dict[str, dict[tuple[str, int], Video]]:
    """{variant: {(scene, seed): Video}} of every stream folder <root>/<variant>/<scene>/seed-<seed>/.
    `condition` is what the stream's metadata "condition" must say where it says anything ("generated" for free
    rollouts, "real" for teacher-forced one-step runs)."""
    root = Path(root)
    layout = rollout_folder.LAYOUT
    if not root.is_dir():
        raise StageError(f"{flag} folder {root} does not exist; run `stage rollout` first or pass the folder that "
                         f"holds {layout}.")
    found: dict[str, dict[tuple[str, int], Video]] = {}
    for vdir in rollout_folder.visible_dirs(root):
        if vdir.name in RESERVED:
            raise StageError(f"{vdir}: variant name {vdir.name!r} is reserved for a reference row; rename the "
                             "variant's rollout folder")
        streams = {}
        for scene, seed, folder in rollout_folder.list_streams(vdir):
            streams[(scene, seed)] = _stream_video(folder, vdir.name, scene, seed, condition, flag)
        if streams:
            found[vdir.name] = streams
    if not found:
        raise StageError(f"{root} holds no rollouts: expected {layout}. Run `stage rollout` first or point {flag} "
                         "at its output folder.")
    return found


def check_streams(found: dict[str, dict], root: str | Path, scene_order: list[str]) -> list[tuple[str, int]]:
    """The streams every variant holds, ordered by scene (split order) then seed; StageError naming the
    first variant that lacks a stream another variant has."""
    union = set().union(*(set(v) for v in found.values()))
    for variant, streams in found.items():
        missing = sorted(union - set(streams), key=lambda s: (scene_order.index(s[0]) if s[0] in scene_order
                                                              else len(scene_order), s))
        if missing:
            has = sorted(v for v, s in found.items() if missing[0] in s)
            names = ", ".join(stream_id(*s) for s in missing[:4]) + (f" and {len(missing) - 4} more"
                                                                     if len(missing) > 4 else "")
            raise StageError(f"{Path(root) / variant} lacks stream {names} ({', '.join(has)} "
                             f"{'has' if len(has) == 1 else 'have'} it): every variant must be scored on the same "
                             f"(scene, seed) streams; roll it out (`stage rollout --variant {variant} --scenes "
                             f"{missing[0][0]} --seeds {missing[0][1]}`) or leave the scene out with evaluate.scenes")
    return sorted(union, key=lambda s: (scene_order.index(s[0]) if s[0] in scene_order else len(scene_order), s))


def rollout_settings(video: Video) -> dict:
    """The comparability-relevant settings of one stream (from its metadata's "settings", else its top level);
    n_frames is what its frames file holds."""
    meta = video.meta
    settings = meta.get("settings") if isinstance(meta.get("settings"), dict) else {}
    out = {k: settings.get(k, meta.get(k)) for k in GLOBAL_KEYS + STREAM_KEYS}
    out["n_frames"] = len(video.frames)
    return out


def _same(video: Video, mine: dict, ref: Video, theirs: dict, what: str) -> None:
    differ = [f"{k} {mine[k]!r} vs {theirs[k]!r}" for k in mine if mine[k] != theirs[k]]
    if differ:
        raise StageError(f"{video.path.parent / rollout_folder.META}: rollout protocol {protocol.protocol_hash(mine)} "
                         f"differs from {ref.path.parent / rollout_folder.META}'s {protocol.protocol_hash(theirs)} "
                         f"({'; '.join(differ)}); {what} must be rolled out with the same settings: re-run "
                         "`stage rollout` for it with the config the others used")


def check_protocols(found: dict[str, dict[tuple[str, int], Video]]) -> str:
    """The rollout protocol hash (GLOBAL_KEYS) shared by every stream of every variant; StageError naming the
    metadata file whose protocol differs, and the keys that differ, otherwise (STREAM_KEYS must agree between
    the variants of one stream)."""
    ref = None
    first_of_stream: dict[tuple, tuple[Video, dict]] = {}
    for variant in sorted(found):
        for key, video in sorted(found[variant].items()):
            s = rollout_settings(video)
            glob, local = {k: s[k] for k in GLOBAL_KEYS}, {k: s[k] for k in STREAM_KEYS}
            ref = ref or (video, glob)
            _same(video, glob, *ref, "every stream of every variant")
            _same(video, local, *first_of_stream.setdefault(key, (video, local)), "every variant on this stream")
    return protocol.protocol_hash(ref[1])


def find_reconstructions(root: str | Path, scenes: list[str]) -> dict[str, Video]:
    """{scene: Video} of the autoencoder reconstructions of `scenes`."""
    root = Path(root)
    if not root.is_dir():
        raise StageError(f"reconstructions folder {root} does not exist; pass the folder holding "
                         f"<scene>/{rollout_folder.FRAMES} written by the autoencoder reconstruction step, or omit "
                         "--reconstructions.")
    frames = {s: rollout_folder.reconstruction_frames(root, s) for s in scenes}
    missing = [s for s in scenes if not frames[s].is_file()]
    if missing:
        raise StageError(f"{root} lacks reconstructions of scenes {missing} ({frames[missing[0]]}); "
                         "reconstruct every evaluated scene, or omit --reconstructions.")
    return {s: Video(s, frames[s], load_frames(frames[s], RERUN_RECONSTRUCT), None, []) for s in scenes}
